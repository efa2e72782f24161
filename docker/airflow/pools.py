"""Print the hospitals' pools as JSON for ``airflow pools import`` (run by docker/airflow/init.sh).

Every enabled hospital of the sources configuration ($HURREN_SOURCES_FILE, else
$HURREN_SITE_DIR/sources.json, else include/sources.json) runs its extraction in its own pool
(``Source.pool``: name and slots); a task whose pool does not exist is never scheduled, so the stack creates them at start. Importing
again updates the slots; a pool whose hospital was removed is left alone (delete it by hand).
"""

from __future__ import annotations

import json
import sys

from hurren.sources import SourcesError, resolve_sources


def pools() -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for source in resolve_sources().enabled:
        if source.pool is None:
            continue
        out[source.pool.name] = {
            "slots": source.pool.slots,
            "description": f"hurren: concurrent queries against {source.org_name} ({source.id})",
            "include_deferred": False,
        }
    return out


def main() -> int:
    try:
        print(json.dumps(pools(), ensure_ascii=False, indent=2))
    except SourcesError as exc:
        print(f"pools: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
