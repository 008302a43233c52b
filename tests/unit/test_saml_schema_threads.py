"""A worker's first logins arrive together: their schema checks must not break libxml2.

libxml2 sets up its built-in schema types on the first XSD compile in a process, and not
thread-safely. When a worker's first request threads compiled the SAML protocol schema at once,
one compile could fail and leave every later one in that process failing: every login the worker
took was refused (`invalid`, a 400). A CI run of tests/faults/test_instances.py saw it: all 20
logins of one instance refused.

Each try below is a fresh process (forked from one that has only imported `saml.sso`, as a
gunicorn worker has imported the app) whose threads run their first SAML schema check at the
same moment. Before the fix about one try in twenty broke (40 tries found it in three runs of
four); now none may."""

import subprocess
import sys
import textwrap

TRIES = 80

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import lxml.etree as etree
    from onelogin.saml2.xml_utils import OneLogin_Saml2_XML
    import saml.sso  # noqa: F401  the app's import: installs the bridge's schema check

    RESPONSE = etree.fromstring(
        b'<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r" '
        b'Version="2.0" IssueInstant="2026-01-01T00:00:00Z"><samlp:Status><samlp:StatusCode '
        b'Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status></samlp:Response>'
    )

    def first_checks():
        start, results = threading.Barrier(4), []

        def check():
            start.wait()
            try:
                out = OneLogin_Saml2_XML.validate_xml(RESPONSE, "saml-schema-protocol-2.0.xsd")
                results.append("valid" if not isinstance(out, str) else out)
            except Exception as exc:
                results.append(type(exc).__name__)
            # and a later compile in this process (a new thread's first check) still works
            try:
                etree.XMLSchema(etree.fromstring(
                    b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
                    b'<xs:element name="a" type="xs:string"/></xs:schema>'))
            except Exception as exc:
                results.append("later: " + type(exc).__name__)

        threads = [threading.Thread(target=check) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in results if r != "valid"]

    broken = 0
    for _ in range(int(sys.argv[1])):
        pid = os.fork()
        if pid == 0:
            os._exit(1 if first_checks() else 0)
        broken += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
    print(broken)
    """
)


def test_concurrent_first_schema_checks_never_break_a_worker():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TRIES)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.strip() == "0", (done.stdout, done.stderr[-2000:])
