"""``python -m hurren.platform``: the region platform from the command line, for integration engineers.

    python -m hurren.platform keygen [--out key.json]
    python -m hurren.platform send ArchiveAutoReport lab.xml  # lab.xml: python -m hurren_testkit.samples lab
    python -m hurren.platform query GetLabInfo --id-no 650000190001010000 --id-type 01 --event-no 5036612
    python -m hurren.platform decrypt --sm4-key 00112233445566778899aabbccddeeff answer.txt

Connection settings (flag, or environment variable):

=====================  ===============================  ===========================================
flag                   environment variable             meaning
=====================  ===============================  ===========================================
--endpoint             HURREN_PLATFORM_URL              SOAP endpoint; default the simulator's
                                                        (HURREN_SIMULATOR_URL, http://127.0.0.1:58080/Myhealth)
--public-key           HURREN_PLATFORM_PUBLIC_KEY       the platform's SM2 public key (hex, Base64
                                                        SPKI or PEM); ``simulator``: ask the
                                                        simulator's /_admin/public-key
--org-code             HURREN_PLATFORM_ORG_CODE         credential: 医疗机构编码
--org-name             HURREN_PLATFORM_ORG_NAME         credential: 医疗机构名称
--visitor-code         HURREN_PLATFORM_VISITOR_CODE     credential: 用户名
--visitor-key-file     HURREN_PLATFORM_VISITOR_KEY      credential: 密码 (env, or a file holding it;
                                                        never a flag: it would show in ps and history)
--wsdl                 HURREN_PLATFORM_WSDL             ``shipped`` (default), ``live`` or a path/URL
--timeout              HURREN_PLATFORM_TIMEOUT          seconds to wait for an answer (30)
--sm2-mode             HURREN_PLATFORM_SM2_MODE         C1C3C2 (default) or C1C2C3
--sm2-no-04            HURREN_PLATFORM_SM2_04=false     SM2 ciphertext without the 04 prefix
--key-form             HURREN_PLATFORM_KEY_FORM         raw (default) or hex
--text-encoding        HURREN_PLATFORM_TEXT_ENCODING    utf-8 (default), gbk or gb18030
--spec-options         the site's (hurren.site)         a SpecOptions profile, JSON (e.g.
                                                        {"xml_declaration": false}); default the
                                                        site's spec-options.json, or
                                                        HURREN_PLATFORM_SPEC_OPTIONS
=====================  ===============================  ===========================================

``send`` and ``query`` take the client's own paths: a payload file is parsed and re-encoded in
the text encoding, with or without the XML declaration (D21), exactly as the pipeline sends; a
query's filter is built as the pipeline builds it. Answers are read as the library reads them: a
query answered ``ok`` (not the encrypted XML the spec describes) is a malformed answer.

Exit status: 0 acknowledged / answered, 1 the platform refused the call (``error:`` or a SOAP
Client fault), 2 bad usage or settings, 3 no usable answer (transport, a Server fault or a
malformed answer). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lxml import etree

from hurren import crypto, spec
from hurren.platform import xml as payloads
from hurren.platform.answers import QueryResult
from hurren.platform.client import PlatformClient
from hurren.platform.envelope import Credential, b64decode
from hurren.platform.exceptions import (
    AnswerError,
    BusinessError,
    ConfigurationError,
    PayloadError,
    PlatformError,
    SoapFault,
    TransportError,
)
from hurren.platform.methods import METHODS
from hurren.settings import SettingsError
from hurren.site import SiteError, spec_options_from_document, spec_options_from_env

_QUERIES = [m.name for m in METHODS.values() if m.kind == "query"]
_RECURE_FLAGS = ("dept_code", "dept_name", "dept_std_code", "dept_std_name", "doc_code", "doc_name")


def _default_endpoint(env: Mapping[str, str]) -> str:
    if env.get("HURREN_PLATFORM_URL"):
        return env["HURREN_PLATFORM_URL"]
    try:
        from hurren.settings import settings

        return settings().simulator_url
    except Exception:  # settings not importable or invalid: fall back to the simulator's default
        return env.get("HURREN_SIMULATOR_URL") or "http://127.0.0.1:58080/Myhealth"


def _connection_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    g = p.add_argument_group("connection (flags or HURREN_PLATFORM_* variables)")
    g.add_argument("--endpoint", default=_default_endpoint(env))
    g.add_argument("--public-key", default=env.get("HURREN_PLATFORM_PUBLIC_KEY"))
    g.add_argument("--org-code", default=env.get("HURREN_PLATFORM_ORG_CODE"))
    g.add_argument("--org-name", default=env.get("HURREN_PLATFORM_ORG_NAME", ""))
    g.add_argument("--visitor-code", default=env.get("HURREN_PLATFORM_VISITOR_CODE"))
    g.add_argument(
        "--visitor-key-file",
        default=None,
        help="file holding the visitor key (else HURREN_PLATFORM_VISITOR_KEY)",
    )
    g.add_argument("--wsdl", default=env.get("HURREN_PLATFORM_WSDL", "shipped"))
    g.add_argument("--timeout", type=float, default=float(env.get("HURREN_PLATFORM_TIMEOUT") or 30))
    g.add_argument(
        "--sm2-mode", choices=("C1C3C2", "C1C2C3"), default=env.get("HURREN_PLATFORM_SM2_MODE", "C1C3C2")
    )
    g.add_argument(
        "--sm2-no-04",
        action="store_true",
        default=env.get("HURREN_PLATFORM_SM2_04", "true").lower() in ("0", "false", "no", "off"),
    )
    g.add_argument("--key-form", choices=("raw", "hex"), default=env.get("HURREN_PLATFORM_KEY_FORM", "raw"))
    g.add_argument(
        "--text-encoding",
        choices=("utf-8", "gbk", "gb18030"),
        default=env.get("HURREN_PLATFORM_TEXT_ENCODING", "utf-8"),
    )
    g.add_argument(
        "--spec-options",
        default=None,
        help="a SpecOptions profile, JSON (docs/spec-decisions.md); default: the site's (hurren.site)",
    )


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hurren.platform",
        description="Talk to the region platform's Myhealth service (SM4/SM2 envelope, SOAP).",
        epilog="Settings: see the module docstring (python -c 'import hurren.platform.__main__ as m; help(m)').",
    )
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen", help="a new SM2 key pair (hex)")
    k.add_argument(
        "--out", help="write {private_key, public_key} JSON here (mode 0600) and print the public key only"
    )

    send = sub.add_parser("send", help="encrypt a payload file, call METHOD, print the (decrypted) answer")
    send.add_argument("method", choices=sorted(METHODS))
    send.add_argument("payload", help="XML file (strReportInfo / strFilter), '-' for stdin")
    _connection_flags(send, env)

    q = sub.add_parser("query", help="call a query method for one person, print the decrypted XML")
    q.add_argument("method", choices=_QUERIES)
    q.add_argument("--id-no", required=True)
    q.add_argument("--id-type", default="01")
    q.add_argument("--event-no")
    q.add_argument("--check", nargs="*", default=[], help="ExistsReCureInfo: exam item codes")
    q.add_argument("--lab", nargs="*", default=[], help="ExistsReCureInfo: lab sub-item codes")
    for name in _RECURE_FLAGS:
        q.add_argument(f"--{name.replace('_', '-')}", help="ExistsReCureInfo filter attribute")
    _connection_flags(q, env)

    d = sub.add_parser("decrypt", help="decrypt a Base64 SM4 answer with a given SM4 key")
    d.add_argument("answer", nargs="?", default="-", help="file holding the answer, '-' for stdin")
    d.add_argument(
        "--sm4-key",
        default=env.get("HURREN_PLATFORM_SM4_KEY"),
        help="32 hex characters (or HURREN_PLATFORM_SM4_KEY)",
    )
    d.add_argument("--text-encoding", default="utf-8")
    return p


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _public_key(args: argparse.Namespace) -> str:
    if not args.public_key:
        raise ConfigurationError(
            "no platform public key: set HURREN_PLATFORM_PUBLIC_KEY or --public-key (or 'simulator')"
        )
    if args.public_key != "simulator":
        return args.public_key
    import httpx

    base = args.endpoint.split("://", 1)[0] + "://" + args.endpoint.split("://", 1)[1].split("/", 1)[0]
    try:
        return (
            httpx.get(f"{base}/_admin/public-key", timeout=args.timeout)
            .raise_for_status()
            .json()["public_key"]
        )
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot read the simulator's public key from {base}/_admin/public-key: {exc}"
        ) from None


def _client(args: argparse.Namespace, env: Mapping[str, str]) -> PlatformClient:
    if args.visitor_key_file:
        visitor_key = Path(args.visitor_key_file).read_text(encoding="utf-8").strip()
    else:
        visitor_key = env.get("HURREN_PLATFORM_VISITOR_KEY", "")
    credential = Credential(
        org_code=args.org_code or "",
        org_name=args.org_name or "",
        visitor_code=args.visitor_code or "",
        visitor_key=visitor_key,
    )
    return PlatformClient(
        endpoint=args.endpoint,
        credential=credential,
        public_key=_public_key(args),
        wsdl=None if args.wsdl == "shipped" else args.wsdl,
        timeout=args.timeout,
        crypto_options=crypto.CryptoOptions(
            mode=args.sm2_mode,
            with_04_prefix=not args.sm2_no_04,
            key_form=args.key_form,
            text_encoding=args.text_encoding,
        ),
        spec_options=_profile(args, env),
        key_max_uses=1,
    )


def _pretty(data: bytes, *, encoding: str = "utf-8") -> str:
    root = payloads.parse_xml(data, what="the decrypted answer", encoding=encoding)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def _profile(args: argparse.Namespace, env: Mapping[str, str]) -> spec.SpecOptions:
    """``--spec-options`` if given, else the site's profile (spec-options.json, HURREN_PLATFORM_SPEC_OPTIONS)."""
    if args.spec_options is None:
        return spec_options_from_env(env)[0]
    try:
        doc = json.loads(args.spec_options)
    except json.JSONDecodeError as exc:
        raise SiteError(f"--spec-options is not JSON: {exc.msg} at position {exc.pos}") from None
    return spec_options_from_document(doc, origin="--spec-options")


def _run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    if args.command == "keygen":
        private, public = crypto.generate_keypair()
        if args.out:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"private_key": private, "public_key": public}, fh)
                fh.write("\n")
            print(public)
        else:
            print(json.dumps({"private_key": private, "public_key": public}, indent=1))
        return 0
    if args.command == "decrypt":
        if not args.sm4_key:
            raise ConfigurationError("give the SM4 key: --sm4-key HEX or HURREN_PLATFORM_SM4_KEY")
        try:
            key = bytes.fromhex(args.sm4_key.strip())
        except ValueError:
            raise ConfigurationError("--sm4-key must be 32 hex characters") from None
        text = _read(args.answer).decode("ascii", errors="replace").strip()
        try:
            data = crypto.sm4_decrypt(b64decode(text, what="the answer"), key)
        except crypto.CryptoError as exc:
            raise AnswerError(f"cannot decrypt: {exc}") from None
        try:
            print(_pretty(data, encoding=args.text_encoding))
        except AnswerError:
            print(data.decode(args.text_encoding, errors="replace"))
        return 0
    with _client(args, env) as client:
        # the client's own paths: the payload re-encoded and the filters built as the pipeline's
        if args.command == "send":
            result = client.call_document(args.method, _read(args.payload))
        else:
            recure = (
                {"check": args.check, "lab": args.lab, **{k: getattr(args, k) for k in _RECURE_FLAGS}}
                if args.method == "ExistsReCureInfo"
                else {}
            )
            result = client.query(
                args.method, id_no=args.id_no, id_type=args.id_type, event_no=args.event_no, **recure
            )
    if isinstance(result, QueryResult):
        print(_pretty(result.xml, encoding=args.text_encoding))
    else:
        print("ok" if result.text is None else f"ok:{result.text}")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = _parser(env).parse_args(argv)
    try:
        return _run(args, env)
    except BusinessError as exc:
        print(f"error:{exc.reason}")
        return 1
    except SoapFault as exc:  # a Client fault refuses the call, as error: does; a Server fault failed
        print(f"platform: {exc}", file=sys.stderr)
        return 3 if exc.retryable else 1
    except (ConfigurationError, PayloadError, SettingsError, SiteError) as exc:
        print(f"platform: {exc}", file=sys.stderr)
        return 2
    except (TransportError, AnswerError, PlatformError) as exc:  # before OSError: TimeoutError is one
        print(f"platform: {exc}", file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"platform: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
