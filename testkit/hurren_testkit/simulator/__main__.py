"""``python -m hurren_testkit.simulator``: run the region platform simulator (flags and env: see ``config``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from hurren import crypto, spec
from hurren_testkit.simulator.config import (
    ConfigError,
    SimulatorConfig,
    Visitor,
    env_bool,
    json_object,
    load_private_key,
)
from hurren_testkit.simulator.faults import Faults, FaultsError


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hurren_testkit.simulator",
        description="Region platform simulator: the Myhealth SOAP service (ten methods, SM4/SM2), with fault injection.",
        epilog="Every flag has an environment variable (HURREN_SIM_*); see hurren_testkit/simulator/config.py.",
    )
    p.add_argument("--host", default=env.get("HURREN_SIM_HOST", "127.0.0.1"))
    p.add_argument(
        "--port", type=int, default=int(env.get("HURREN_SIM_PORT") or 58080), help="0 picks a free port"
    )
    p.add_argument("--path", default=env.get("HURREN_SIM_PATH", "/Myhealth"))
    p.add_argument(
        "--key-file",
        default=env.get("HURREN_SIM_KEY_FILE"),
        help="SM2 key pair (JSON); created when missing; without it a pair is generated per start",
    )
    p.add_argument("--print-public-key", action="store_true", help="print the SM2 public key (hex) and exit")
    p.add_argument("--db", default=env.get("HURREN_SIM_DB", ":memory:"), help="SQLite file, or :memory:")
    p.add_argument(
        "--visitor",
        action="append",
        default=None,
        metavar="ORG:CODE:KEY[:NAME]",
        help="accepted credential (repeatable); none: any well-formed credential passes",
    )
    p.add_argument("--recent-days", type=int, default=int(env.get("HURREN_SIM_RECENT_DAYS") or 90))
    p.add_argument("--recognition-days", type=int, default=int(env.get("HURREN_SIM_RECOGNITION_DAYS") or 30))
    p.add_argument("--area-code", default=env.get("HURREN_SIM_AREA_CODE", "650000"))
    p.add_argument(
        "--public-url", default=env.get("HURREN_SIM_PUBLIC_URL"), help="base of url/pdf_url in answers"
    )
    p.add_argument(
        "--sm2-mode", choices=("C1C3C2", "C1C2C3"), default=env.get("HURREN_SIM_SM2_MODE", "C1C3C2")
    )
    p.add_argument(
        "--sm2-no-04",
        action="store_true",
        default=not env_bool(env, "HURREN_SIM_SM2_04", True),
        help="SM2 ciphertext without the 04 prefix",
    )
    p.add_argument("--key-form", choices=("raw", "hex"), default=env.get("HURREN_SIM_KEY_FORM", "raw"))
    p.add_argument(
        "--text-encoding",
        choices=("utf-8", "gbk", "gb18030"),
        default=env.get("HURREN_SIM_TEXT_ENCODING", "utf-8"),
    )
    p.add_argument(
        "--spec-options", default=env.get("HURREN_SIM_SPEC_OPTIONS"), help="SpecOptions profile (JSON)"
    )
    p.add_argument(
        "--faults", default=env.get("HURREN_SIM_FAULTS"), help='e.g. {"error_rate": 0.1, "seed": 7}'
    )
    p.add_argument("--latency-ms", type=float, default=None)
    p.add_argument("--error-rate", type=float, default=None)
    p.add_argument("--http500-rate", type=float, default=None)
    p.add_argument("--drop-rate", type=float, default=None)
    p.add_argument("--timeout-rate", type=float, default=None)
    p.add_argument("--timeout-s", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--lenient",
        action="store_true",
        default=env_bool(env, "HURREN_SIM_LENIENT", False),
        help="ignore unknown attributes instead of refusing them",
    )
    p.add_argument(
        "--check-rate",
        type=float,
        default=float(env.get("HURREN_SIM_CHECK_RATE") or 1.0),
        help="share of submissions checked field by field (fast-ack: 0.01 or 0); every one is still "
        "decrypted, parsed and stored",
    )
    p.add_argument(
        "--admin-token", default=env.get("HURREN_SIM_ADMIN_TOKEN"), help="required in X-Admin-Token"
    )
    p.add_argument("--log-level", default=env.get("HURREN_SIM_LOG_LEVEL", "INFO"))
    return p


def build_config(args: argparse.Namespace, env: Mapping[str, str]) -> SimulatorConfig:
    visitors_text = (
        args.visitor
        if args.visitor is not None
        else [v for v in (env.get("HURREN_SIM_VISITORS") or "").split(",") if v.strip()]
    )
    faults = Faults.from_mapping(json_object(args.faults, name="--faults / HURREN_SIM_FAULTS"))
    flags = {
        name: getattr(args, name)
        for name in (
            "latency_ms",
            "error_rate",
            "http500_rate",
            "drop_rate",
            "timeout_rate",
            "timeout_s",
            "seed",
        )
        if getattr(args, name) is not None
    }
    faults = Faults.from_mapping(flags, base=faults)
    try:
        spec_options = spec.SpecOptions.from_mapping(json_object(args.spec_options, name="--spec-options"))
    except spec.SpecError as exc:
        raise ConfigError(f"--spec-options: {exc}") from None
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        path=args.path,
        private_key=load_private_key(key_file=args.key_file, private_key=env.get("HURREN_SIM_PRIVATE_KEY")),
        db=args.db,
        visitors=tuple(Visitor.parse(v) for v in visitors_text),
        recent_days=args.recent_days,
        recognition_days=args.recognition_days,
        area_code=args.area_code,
        public_url=args.public_url,
        crypto_options=crypto.CryptoOptions(
            mode=args.sm2_mode,
            with_04_prefix=not args.sm2_no_04,
            key_form=args.key_form,
            text_encoding=args.text_encoding,
        ),
        spec_options=spec_options,
        faults=faults,
        strict_attributes=not args.lenient,
        check_rate=args.check_rate,
        admin_token=args.admin_token,
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = _parser(env).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = build_config(args, env)
    except (ConfigError, FaultsError, ValueError, OSError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    if args.print_public_key:
        print(config.public_key)
        return 0

    from hurren_testkit.simulator.server import Simulator  # imported late: --help and key printing stay fast

    try:
        sim = Simulator(config=config)
    except OSError as exc:
        print(
            f"simulator: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sim.start()
    visitors = (
        f"{len(config.visitors)} visitor(s)" if config.visitors else "any credential accepted (no --visitor)"
    )
    print(
        f"simulator: serving {sim.url} (WSDL {sim.url}?wsdl, admin {sim.admin_url}); {visitors}", flush=True
    )
    print(f"simulator: SM2 public key {sim.public_key}", flush=True)
    stop.wait()
    sim.stop()
    print("simulator: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
