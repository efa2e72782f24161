"""Child process of the crash tests: ``python -m hurren.push run`` that SIGKILLs itself.

    python -m tests.faults.kill_push N run --concurrency 3 [--set OPTION=VALUE ...]

After the N-th platform answer arrives, and before it is recorded, the process kills itself
(SIGKILL): the crash the outbox must survive. Everything else is the CLI's ``run`` as it is (the
site, store, S3 and platform from the environment); the kill is the runner's ``after_answer`` hook,
which only tests pass. The exit status must be -9.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def main(argv: list[str]) -> int:
    from hurren.push import __main__ as cli
    from hurren.push import tasks
    from hurren.push.connection import PlatformConfig
    from hurren.site import site

    kill_after = int(argv[0])
    args = cli._parser().parse_args(argv[1:])
    if args.command != "run":
        raise SystemExit("kill_push: only the run command")
    answers, lock = [0], threading.Lock()

    def after_answer() -> None:
        with lock:
            answers[0] += 1
            if answers[0] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    here = site()
    assert here.settings.platform is not None
    platform = PlatformConfig.from_settings(here.settings.platform, spec_options=here.spec_options)
    tasks.run_push(options=cli._options(args), run_id=args.run_id, platform=platform, settings_=here.settings,
                   after_answer=after_answer)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
