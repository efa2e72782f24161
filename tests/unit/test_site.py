"""The site configuration (hurren.site): one directory, checked at load, passed explicitly."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hurren import rules, spec
from hurren.push.connection import PlatformConfig
from hurren.push.exceptions import PushConfigError
from hurren.settings import Settings
from hurren.site import Site, SiteError
from hurren.sources import DEFAULT_SOURCES_FILE

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
SOURCES = {
    "hospitals": [{"id": "h1", "org_code": "111", "org_name": "一院", "conn_id": "c1", "dialect": "oracle"}]
}


def make_site(tmp_path: Path, **files: object) -> Path:
    """A site directory with these files (``spec_options`` is ``spec-options.json``; text as is,
    anything else as JSON)."""
    d = tmp_path / "site"
    d.mkdir()
    for name, content in files.items():
        path = d / ("spec-options.json" if name == "spec_options" else name)
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return d


def test_without_a_site_directory_everything_is_the_shipped_default() -> None:
    s = Site.from_env({})
    assert s.directory is None and s.spec_options == spec.DEFAULT_OPTIONS
    assert s.spec_options_origin == "the spec's defaults"
    assert s.rulebook.fingerprint == rules.load_rulebook().fingerprint
    assert s.sources.origin == str(DEFAULT_SOURCES_FILE)
    assert (s.daily_counts_cron, s.daily_counts_timezone, s.dictionaries_dir) == (
        "0 3 * * *",
        "Asia/Shanghai",
        None,
    )


def test_the_site_directory_gives_profile_rules_sources_and_dictionaries(tmp_path: Path) -> None:
    d = make_site(
        tmp_path,
        spec_options={"length_semantics": "char", "void_data_status": ["0", "9"], "$comment": "why"},
        **{"rules.json": {"overrides": [{"rule": "dtime_order", "severity": "error", "entity": "labmaster"}],
                          "params": {"pdf_max_bytes": 1024}},
           "sources.json": SOURCES},
    )  # fmt: skip
    s = Site.from_env({"HURREN_SITE_DIR": str(d)})
    assert s.spec_options.length_semantics == "char" and s.spec_options.void_data_status == ("0", "9")
    assert s.spec_options_origin == str(d / "spec-options.json")
    assert s.rulebook.severity("dtime_order", "labmaster", "authenticator_dtime") == "error"
    assert s.rulebook.severity("dtime_order", "exammaster", "authenticator_dtime") == "warning"
    assert s.rulebook.pdf_max_bytes == 1024
    assert (
        s.rulebook.severity("uid", "exammaster", "study_instance_uid") == "warning"
    )  # shipped override kept
    assert [h.id for h in s.sources] == ["h1"]
    assert s.dictionaries_dir == d / "dictionaries"
    # $HURREN_SOURCES_FILE and $HURREN_SITE_DICTIONARIES keep working, and win
    s = Site.from_env({"HURREN_SITE_DIR": str(d), "HURREN_SOURCES_FILE": str(DEFAULT_SOURCES_FILE),
                       "HURREN_SITE_DICTIONARIES": str(tmp_path)})  # fmt: skip
    assert s.sources.origin == str(DEFAULT_SOURCES_FILE) and s.dictionaries_dir == tmp_path


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ({"length_semantic": "char"}, r"spec-options.json: unknown key\(s\) \['length_semantic'\]"),
        (
            {"length_semantics": "chars"},
            r"spec-options.json: key 'length_semantics': must be one of \['byte', 'char'\]",
        ),
        ({"xml_declaration": "false"}, r"key 'xml_declaration': must be true or false"),
        (
            {"effective_dtime_tolerance_s": "300"},
            r"key 'effective_dtime_tolerance_s': must be a whole number",
        ),
        ({"void_data_status": "0"}, r"key 'void_data_status': must be a list of strings"),
        (
            {"attribute_aliases": {"labmaster.name": 1}},
            r"key 'attribute_aliases': must be an object of strings",
        ),
        (["length_semantics"], r"spec-options.json: must be a JSON object"),
        ("{not json", r"spec-options.json: not JSON"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_file_and_key(
    tmp_path: Path, profile: object, message: str
) -> None:
    d = make_site(tmp_path, spec_options=profile)
    with pytest.raises(SiteError, match=message):
        Site.from_env({"HURREN_SITE_DIR": str(d)})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rules": {}}, r"rules.json: unknown key\(s\) \['rules'\]"),
        ({"overrides": [{"rule": "length", "severity": "warning", "feild": "name"}]},
         r"overrides\[0\]: unknown key\(s\) \['feild'\]"),
        ({"overrides": [{"rule": "lenght", "severity": "warning"}]}, r"rules.json.*overrides\[1\]: unknown rule 'lenght'"),
        ({"overrides": [{"rule": "length", "severity": "fatal"}]}, r"rules.json.*severity must be one of"),
        ({"params": {"pdf_max": 1}}, r"rules.json: key 'params' must be an object with some of \['pdf_max_bytes'\]"),
    ],
)  # fmt: skip
def test_a_bad_site_rule_book_is_refused_naming_the_file_and_key(
    tmp_path: Path, doc: object, message: str
) -> None:
    d = make_site(tmp_path, **{"rules.json": doc})
    with pytest.raises(SiteError, match=message):
        Site.from_env({"HURREN_SITE_DIR": str(d)})


def test_the_profile_variable_still_works_but_not_together_with_the_file(tmp_path: Path) -> None:
    s = Site.from_env({"HURREN_PLATFORM_SPEC_OPTIONS": '{"update_mode": "void_then_register"}'})
    assert s.spec_options.update_mode == "void_then_register"
    assert s.spec_options_origin == "HURREN_PLATFORM_SPEC_OPTIONS"
    with pytest.raises(SiteError, match="HURREN_PLATFORM_SPEC_OPTIONS: unknown key"):
        Site.from_env({"HURREN_PLATFORM_SPEC_OPTIONS": '{"update": "replace"}'})
    d = make_site(tmp_path, spec_options={})
    with pytest.raises(SiteError, match="set twice"):
        Site.from_env({"HURREN_SITE_DIR": str(d), "HURREN_PLATFORM_SPEC_OPTIONS": "{}"})


def test_the_daily_counts_schedule_and_the_directory_are_checked(tmp_path: Path) -> None:
    s = Site.from_env(
        {"HURREN_DAILY_COUNTS_CRON": "30 2 * * *", "HURREN_DAILY_COUNTS_TIMEZONE": "Asia/Urumqi"}
    )
    assert (s.daily_counts_cron, s.daily_counts_timezone) == ("30 2 * * *", "Asia/Urumqi")
    with pytest.raises(SiteError, match="HURREN_DAILY_COUNTS_CRON"):
        Site.from_env({"HURREN_DAILY_COUNTS_CRON": "daily at 3"})
    with pytest.raises(SiteError, match="HURREN_DAILY_COUNTS_TIMEZONE 'Beijing'"):
        Site.from_env({"HURREN_DAILY_COUNTS_TIMEZONE": "Beijing"})
    with pytest.raises(SiteError, match="HURREN_SITE_DIR=.* is not a directory"):
        Site.from_env({"HURREN_SITE_DIR": str(tmp_path / "missing")})
    bad = make_site(tmp_path, **{"sources.json": {"hospitals": []}})
    with pytest.raises(SiteError, match="sources.json"):
        Site.from_env({"HURREN_SITE_DIR": str(bad)})


def test_the_platform_connection_cannot_push_under_another_profile() -> None:
    env = {"HURREN_PLATFORM_PUBLIC_KEY": "04" + "1" * 128, "HURREN_PLATFORM_ORG_CODE": "1",
           "HURREN_PLATFORM_VISITOR_CODE": "v", "HURREN_PLATFORM_VISITOR_KEY": "k"}  # fmt: skip
    platform = Settings.from_env(env).platform
    assert platform is not None
    profile = spec.SpecOptions.from_mapping({"xml_declaration": False})
    conn = SimpleNamespace(host="http://p/Myhealth", port=None, schema=None, login="v", password="k",
                           extra_dejson={"spec_options": {"xml_declaration": False}})  # fmt: skip
    assert (
        PlatformConfig.from_connection(conn, fallback=platform, spec_options=profile).spec_options == profile
    )
    with pytest.raises(PushConfigError, match="differs from the site's profile"):
        PlatformConfig.from_connection(conn, fallback=platform, spec_options=spec.DEFAULT_OPTIONS)


def test_the_library_builds_the_default_profile_in_one_place_and_reads_no_test_switch() -> None:
    """``SpecOptions()`` is called once (spec.DEFAULT_OPTIONS); nothing defaults ``options`` to None;
    the push's crash switch is a hook the tests pass, not an environment variable."""
    built, optional = [], []
    for path in sorted(PLUGINS.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "HURREN_PUSH_KILL_AFTER_ANSWERS" not in text, path
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "SpecOptions"
            ):
                built.append(f"{path.relative_to(PLUGINS)}:{node.lineno}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    hint = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                    if "SpecOptions | None" in hint or "RuleBook | None" in hint:
                        optional.append(f"{path.relative_to(PLUGINS)}:{node.name} {arg.arg}")
    assert len(built) == 1 and built[0].startswith("hurren/spec.py:"), built
    assert optional == ["hurren/platform/xml.py:reverse_aliases options"], optional  # None reads no aliases
