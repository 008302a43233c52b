"""`policy plan` takes a user's rows from statements sorted by user id as the users go by
(bridge.planning._Following): the rows of a user who is not among the users read (one created
or deleted between the statements) must be passed over, never given to the next user."""

from bridge import planning


class Fetched:
    """A result whose rows come in fetches, as a streamed statement's do."""

    def __init__(self, *fetches):
        self.fetches = fetches

    def partitions(self):
        yield from self.fetches


def test_a_users_rows_across_fetches_and_rows_of_absent_users():
    """Rows of one user split over two fetches come together; rows of ids no user had are
    skipped wherever they fall (first, between users, last)."""
    following = planning._Following(
        Fetched([(1, "gone"), (2, "a")], [(2, "b"), (4, "gone"), (6, "c")], [(9, "gone")]),
        lambda raw: raw,
    )
    assert following.take(2) == [(2, "a"), (2, "b")]
    assert following.take(3) == []
    assert following.take(5) == []
    assert following.take(6) == [(6, "c")]
    assert following.take(8) == []
    assert following.take(10) == []


def test_ids_compare_by_their_key():
    """Ids are compared by the key given (a UUID's number on PostgreSQL), in whose order the
    rows come, not as they come."""
    following = planning._Following(Fetched([("z", 1), ("a", 2)]), {"z": 10, "a": 20}.get)
    assert following.take(10) == [("z", 1)]
    assert following.take(20) == [("a", 2)]


def test_no_rows_at_all():
    following = planning._Following(Fetched(), lambda raw: raw)
    assert following.take(1) == [] and following.take(2) == []
