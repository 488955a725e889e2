"""The README as a specification stays true, in what it names and in what it says.

Existence: its make targets, endpoints, settings, test files and tests are real. Meaning: each
setting's documented default is the code's, each setting sits in the table of the services
that read it, every metric the README, the alerts and the dashboard name is exported (with the
labels the README gives it), every number it states about a test is that test's, no test it
cites as proof can be skipped, and the tests that can skip are exactly the ones it lists.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.broadcast_gateway.settings import GatewaySettings
from services.persister.settings import PersisterSettings
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from tests.models import farming_bound

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PROSE = " ".join(README.split())  # line breaks fall anywhere in a sentence
SETTINGS: tuple[type[BaseSettings], ...] = (ApiSettings, GatewaySettings, PersisterSettings)
# The README's configuration tables, by heading, and the settings classes each one documents.
CONFIGURATION_TABLES: dict[str, tuple[type[BaseSettings], ...]] = {
    "Shared (all services)": SETTINGS,
    "Score API": (ApiSettings,),
    "Broadcast gateway": (GatewaySettings,),
    "Persister": (PersisterSettings,),
}
# Every module that defines Prometheus metrics; importing them fills the default registry.
METRIC_MODULES = (
    "services.score_api.metrics",
    "services.broadcast_gateway.metrics",
    "services.persister.metrics",
)
MONITORING = ROOT / "deploy/k8s/components/monitoring"
CITED_TEST = r"(tests/test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)"


# Commands, endpoints, files and tests exist


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README))
    assert named, "the README names no make target"
    assert named <= targets, named - targets


def test_every_http_endpoint_the_readme_names_is_in_the_openapi_document() -> None:
    document = create_app(ApiSettings()).state.api.openapi_document
    operations = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    named = set(re.findall(r"`(GET|POST|DELETE|PUT|PATCH) (/[^`?\s]*)", README))
    assert named, "the README names no endpoint"
    api_named = {(m, p) for m, p in named if not p.startswith(("/ws", ":"))}
    assert api_named <= operations, api_named - operations


def test_every_test_file_the_readme_cites_exists() -> None:
    cited = set(re.findall(r"`(tests/test_[a-z0-9_]+\.py)", README))
    assert cited
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert missing == []


def test_every_test_the_readme_names_exists() -> None:
    named = cited_tests(README)
    assert named
    missing = [
        f"{path}::{test}" for path, test in named if f"def {test}(" not in (ROOT / path).read_text()
    ]
    assert missing == []


def cited_tests(text: str) -> set[tuple[str, str]]:
    """``tests/test_x.py::test_y``, and ``::test_z`` continuing such a citation."""
    named = set(re.findall(rf"`?{CITED_TEST}", text))
    for path, tests in re.findall(
        r"(tests/test_[a-z0-9_]+\.py)::test_[a-z0-9_]+((?:`, `::test_[a-z0-9_]+)+)", text
    ):
        named |= {(path, test) for test in re.findall(r"::(test_[a-z0-9_]+)", tests)}
    return named


# Settings


@dataclass(frozen=True)
class Row:
    table: str
    setting: str
    default: str


def configuration_rows() -> list[Row]:
    """The rows of every ``| variable | default | meaning |`` table, with its ``###`` heading."""
    rows, heading, in_table = [], "", False
    for line in README.splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
        if line == "| variable | default | meaning |":
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and (match := re.match(r"^\| `([A-Z][A-Z0-9_]+)` \| (.*?) \| ", line)):
            rows.append(Row(heading, match[1], match[2]))
    return rows


def test_every_setting_is_in_a_configuration_table_and_every_row_is_a_setting() -> None:
    fields = {name.upper() for cls in SETTINGS for name in cls.model_fields}
    rows = {row.setting for row in configuration_rows()}
    assert fields - rows == set(), f"settings missing from the README: {sorted(fields - rows)}"
    assert rows - fields == set(), f"README rows that are not settings: {sorted(rows - fields)}"


def test_each_setting_is_in_the_table_of_the_services_that_read_it() -> None:
    wrong = []
    for row in configuration_rows():
        assert row.table in CONFIGURATION_TABLES, f"unknown configuration table {row.table!r}"
        readers = {cls for cls in SETTINGS if row.setting.lower() in cls.model_fields}
        if readers != set(CONFIGURATION_TABLES[row.table]):
            wrong.append(
                f"{row.setting} under {row.table!r}, read by {sorted(c.__name__ for c in readers)}"
            )
    assert wrong == []


def test_every_documented_default_is_the_code_default(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = []
    for row in configuration_rows():
        cls = next(cls for cls in SETTINGS if row.setting.lower() in cls.model_fields)
        if (row.setting, row.default) in DESCRIBED_DEFAULTS:
            if not DESCRIBED_DEFAULTS[row.setting, row.default](cls, monkeypatch):
                wrong.append(f"{row.setting}: the default is not {row.default}")
            continue
        documented = documented_value(row.setting, row.default)
        default = code_default(cls, row.setting)
        if not same_value(documented, default):
            wrong.append(f"{row.setting}: README {row.default}, code {default!r}")
    assert wrong == []


def documented_value(setting: str, cell: str) -> object:
    """How the README writes a default, as the Python value it means.

    ``unset`` is None. A backticked JSON value is that value (`true`, `[]`, `""`, `["HS256"]`,
    `{"quest_complete": 10}`, `2.0`), and a number may group its digits with `_` or `,`
    (`10_000`, `10,000`). A duration (`24 h`, `500 ms`, `1 min`, `30 s`) is for a setting named
    `*_SECONDS` or `*_MS`, in that unit. Any other backticked text is that string
    (`development`, `/ws/score`). Defaults that are described rather than written out are
    in ``DESCRIBED_DEFAULTS``.
    """
    if cell == "unset":
        return None
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"{setting}: write the default as one `value`, or `unset`: {cell!r}"
    text = match[1]
    number = r"-?\d[\d_,]*(?:\.\d+)?"
    if re.fullmatch(number, text):
        text = text.replace("_", "").replace(",", "")
    if duration := re.fullmatch(rf"({number}) ?(ms|s|min|h)", text):
        seconds = float(duration[1].replace("_", "").replace(",", "")) * UNITS[duration[2]]
        assert setting.endswith(("_MS", "_SECONDS")), f"{setting}: a duration for a count?"
        return seconds / (UNITS["ms"] if setting.endswith("_MS") else 1.0)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def code_default(cls: type[BaseSettings], setting: str) -> object:
    return cls.model_fields[setting.lower()].get_default(call_default_factory=True)


def same_value(documented: object, default: object) -> bool:
    """Equal, with `2` meaning 2.0, but `true` never meaning 1."""
    if isinstance(documented, bool) or isinstance(default, bool):
        return type(documented) is type(default) and documented == default
    return documented == default


def is_the_development_secret(cls: type[BaseSettings], _: pytest.MonkeyPatch) -> bool:
    """The default secret is the one production refuses as the development secret."""
    try:
        cls(
            environment="production",
            jwt_issuer="https://issuer.example/",
            jwt_audience="leaderboard",
            jwt_secret=code_default(cls, "JWT_SECRET"),
        )
    except ValidationError as error:
        return "development secret" in str(error)
    return False


def is_hostname_else_host_name(cls: type[BaseSettings], monkeypatch: pytest.MonkeyPatch) -> bool:
    """The default is $HOSTNAME when it is set (a pod's name), else the machine's host name."""
    monkeypatch.setenv("HOSTNAME", "persister-7f9c-x2")
    from_env = code_default(cls, "PERSISTER_CONSUMER")
    monkeypatch.delenv("HOSTNAME")
    return (
        from_env == "persister-7f9c-x2"
        and code_default(cls, "PERSISTER_CONSUMER") == socket.gethostname()
    )


# Defaults the README describes in words: (setting, README cell) -> what the words mean.
DESCRIBED_DEFAULTS: dict[
    tuple[str, str], Callable[[type[BaseSettings], pytest.MonkeyPatch], bool]
] = {
    ("JWT_SECRET", "development secret"): is_the_development_secret,
    ("PERSISTER_CONSUMER", "`$HOSTNAME` / host name"): is_hostname_else_host_name,
}


# Metrics


def our_metrics() -> list[MetricWrapperBase]:
    """The metric objects the services define (importing them registers them)."""
    modules = map(importlib.import_module, METRIC_MODULES)
    return [
        m for module in modules for m in vars(module).values() if isinstance(m, MetricWrapperBase)
    ]


def exported_metrics() -> dict[str, set[str]]:
    """Every name a query may use -> the labels its series carry, from the default registry.

    Counters expose ``_total`` (and ``_created``); histograms ``_bucket`` (with ``le``),
    ``_sum``, ``_count`` and ``_created``, and the README may name a histogram or gauge as is.
    prometheus_client's own process and Python metrics are in the registry too.
    """
    labels = {
        family.name: tuple(metric._labelnames)
        for metric in our_metrics()
        for family in metric.describe()
    }
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("", "_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: dict[str, set[str]] = {}
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ("",)):
            extra = {"le"} if suffix == "_bucket" else set()
            names[family.name + suffix] = set(labels.get(family.name, ())) | extra
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric name, label names) of every series selector in a PromQL expression."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges: [5m]
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    keywords = {"and", "or", "unless", "bool", "offset"}
    for match in re.finditer(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\}|\()?", text):
        name, braces = match[1], match[2] or ""
        if braces != "(" and name not in keywords:
            yield name, set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", braces))


def missing_metrics(named: Iterable[tuple[str, set[str]]], where: str) -> list[str]:
    exported = exported_metrics()
    missing = []
    for name, labels in named:
        if name not in exported:
            missing.append(f"{where}: {name} is not exported")
        elif labels - exported[name]:
            missing.append(f"{where}: {name} has no label {sorted(labels - exported[name])}")
    return missing


def readme_metrics() -> Iterator[tuple[str, set[str]]]:
    """`score_api_x`, `gateway_x{type}`, `persister_x{backend="postgres"}` in the README."""
    for name, braces in re.findall(r"`((?:score_api|gateway|persister)_\w+)(\{[^}`]*\})?`", README):
        yield name, set(re.findall(r"[A-Za-z_]\w*", re.sub(r'"[^"]*"', "", braces)))


def test_every_metric_the_readme_names_is_exported_with_those_labels() -> None:
    named = list(readme_metrics())
    assert len(named) > 20, "the README's metric names are no longer found"
    assert missing_metrics(named, "README") == []


def test_every_metric_the_services_export_is_named_in_the_readme() -> None:
    named = {name for name, _labels in readme_metrics()}
    families = exported_metrics()
    ours = {
        family.name + ("_total" if family.type == "counter" else "")
        for metric in our_metrics()
        for family in metric.describe()
    }
    assert ours <= set(families)
    assert ours - named == set(), f"exported but not in the README: {sorted(ours - named)}"


def monitoring_expressions() -> Iterator[tuple[str, str]]:
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            yield alert["alert"], alert["expr"]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def test_every_metric_the_alerts_and_the_dashboard_query_is_exported_with_those_labels() -> None:
    missing = []
    expressions = list(monitoring_expressions())
    assert len(expressions) > 10
    for where, expr in expressions:
        named = list(selectors(expr))
        assert named, f"{where}: no metric in {expr!r}"
        missing += missing_metrics(named, where)
    assert missing == []


def test_every_alert_in_the_rules_has_a_row_in_the_readme_and_back() -> None:
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    alerts = {alert["alert"] for group in rule["spec"]["groups"] for alert in group["rules"]}
    rows = set(re.findall(r"^\| `([A-Z][A-Za-z0-9]+)` \((?:warning|critical)\) \|", README, re.M))
    assert rows == alerts


# Numbers the README states about the tests


def module_tree(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), path)


def function(path: str, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
    for node in ast.walk(module_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    raise AssertionError(f"no function {name} in {path}")


def module_value(path: str, name: str) -> ast.expr:
    for node in module_tree(path).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == name and node.value:
            return node.value
    raise AssertionError(f"no module-level {name} in {path}")


def constant(path: str, name: str) -> int:
    """A module-level integer such as ``UPDATES = 400``."""
    value = ast.literal_eval(module_value(path, name))
    assert isinstance(value, int), f"{path}: {name} is not an integer"
    return value


def dict_size(path: str, name: str) -> int:
    """The number of entries of a module-level dict literal such as ``CORPUS = {...}``."""
    value = module_value(path, name)
    assert isinstance(value, ast.Dict), f"{path}: {name} is not a dict literal"
    return len(value.keys)


def posts(path: str, test: str) -> int:
    """How many ``.post(...)`` calls a test makes: a ``for`` loop or a comprehension over
    ``range(...)`` of constants multiplies what it contains. Anything else that repeats
    (``while``, a loop over another iterable, a nested function) is refused, not guessed."""

    def count(node: ast.AST) -> int:
        if isinstance(node, ast.For | ast.AsyncFor):
            inner = sum(map(count, node.body))
            return (inner and times(node.iter) * inner) + sum(map(count, node.orelse))
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            inner = count(node.elt)
            return inner and math.prod(times(g.iter) for g in node.generators) * inner
        if isinstance(node, ast.While | ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            raise AssertionError(
                f"{path}::{test}: cannot count the posts in a {type(node).__name__}"
            )
        own = isinstance(node, ast.Call) and ast.unparse(node.func).endswith(".post")
        return own + sum(map(count, ast.iter_child_nodes(node)))

    def times(iterable: ast.expr) -> int:
        assert isinstance(iterable, ast.Call), f"{path}::{test}: a loop not over range()"
        assert ast.unparse(iterable.func) == "range", f"{path}::{test}: a loop not over range()"
        return len(range(*(ast.literal_eval(arg) for arg in iterable.args)))

    return sum(map(count, function(path, test).body))


def asserted_minimum(path: str, test: str) -> int:
    """N in the test's one ``assert ... >= N``."""
    (minimum,) = [
        node.comparators[0].value
        for node in ast.walk(function(path, test))
        if isinstance(node, ast.Compare)
        and isinstance(node.ops[0], ast.GtE)
        and isinstance(node.comparators[0], ast.Constant)
    ]
    assert isinstance(minimum, int)
    return minimum


@dataclass(frozen=True)
class NumberClaim:
    """A number the README states about a test (the pattern's one group) and where the test
    has it."""

    pattern: str
    actual: Callable[[], int]


NUMBER_CLAIMS = {
    "token corpus size": NumberClaim(
        r"`tests/test_security\.py::test_every_forged_or_invalid_token_is_401_and_changes_nothing`"
        r" \(([\d,]+) kinds\)",
        lambda: dict_size("tests/test_security.py", "CORPUS"),
    ),
    "replays": NumberClaim(
        r"\(`tests/test_security\.py`: ([\d,]+) replays\)",
        lambda: posts("tests/test_security.py", "test_thousands_of_replays_count_once"),
    ),
    "schemathesis cases": NumberClaim(
        r"fuzzed with schemathesis: ([\d,]+)\+ cases",
        lambda: asserted_minimum(
            "tests/test_openapi.py", "test_schemathesis_finds_no_server_error_or_nonconformance"
        ),
    ),
    "concurrent updates": NumberClaim(
        r"over HTTP: ([\d,]+) concurrent updates sum exactly",
        lambda: posts(
            "tests/test_score_api.py", "test_200_concurrent_updates_with_distinct_keys_sum_exactly"
        ),
    ),
    "concurrent replays": NumberClaim(
        r"sum exactly; ([\d,]+) concurrent replays count once",
        lambda: posts(
            "tests/test_score_api.py", "test_200_concurrent_updates_with_the_same_key_count_once"
        ),
    ),
    "multi-instance updates": NumberClaim(
        r"`tests/test_multi_instance\.py` runs two of each service as real processes: "
        r"([\d,]+) concurrent updates",
        lambda: constant("tests/test_multi_instance.py", "UPDATES"),
    ),
    "cluster masters": NumberClaim(
        r"Proven by `tests/test_cluster\.py`: a (\w+)-master cluster",
        lambda: constant("tests/cluster_fixtures.py", "MASTERS"),
    ),
}
WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@pytest.mark.parametrize("claim", NUMBER_CLAIMS.values(), ids=NUMBER_CLAIMS.keys())
def test_every_number_the_readme_states_about_a_test_is_the_tests(claim: NumberClaim) -> None:
    match = re.search(claim.pattern, PROSE)
    assert match, f"the README no longer says {claim.pattern!r}: update NUMBER_CLAIMS"
    stated = WORDS.get(match[1]) or int(match[1].replace(",", ""))
    assert stated == claim.actual(), match[0]


# Skips


SKIP_TABLE = "| test | skipped when | why |"
SKIP_MARKS = {"pytest.mark.skip", "pytest.mark.skipif", "pytest.mark.xfail"}
SKIP_CALLS = {"pytest.skip", "pytest.importorskip", "pytest.xfail"}
# How the README's skip table words each condition under which something in tests/ skips.
CONDITIONS = {"os.geteuid() != 0": "not root"}


@dataclass(frozen=True)
class Skip:
    """Where a test can skip: ``tests/x.py::function`` (a test, fixture or helper, or
    ``::Class::method``), or ``tests/x.py`` for anything at module level (``pytestmark``, a
    mark bound to a name, a module-level ``importorskip``); and when: a ``skipif``/``xfail``
    condition's source, "always" for a bare mark, "at run time" for a ``pytest.skip()`` call."""

    site: str
    when: str


def skips() -> set[Skip]:
    """Every skip or xfail mark and every skip, importorskip or xfail call in tests/*.py."""
    found = set()
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node, site in units(ast.parse(path.read_text()), path.relative_to(ROOT).as_posix()):
            called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
            for inner in ast.walk(node):
                target = ast.unparse(inner.func if isinstance(inner, ast.Call) else inner)
                if isinstance(inner, ast.Call) and target in SKIP_MARKS:
                    when = ast.unparse(inner.args[0]) if inner.args else "always"
                    found.add(Skip(site, when))
                elif isinstance(inner, ast.Call) and target in SKIP_CALLS:
                    found.add(Skip(site, "at run time"))
                elif target in SKIP_MARKS and id(inner) not in called:
                    found.add(Skip(site, "always"))
    return found


def units(module: ast.Module, path: str) -> Iterator[tuple[ast.AST, str]]:
    """Each top-level function and method with its site name; everything else as the module."""
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, f"{path}::{node.name}"
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield item, f"{path}::{node.name}::{item.name}"
                else:
                    yield item, path
            for decorator in node.decorator_list:
                yield decorator, path
        else:
            yield node, path


def skip_table_lines() -> list[str]:
    """The README's skip table: its header, separator and rows ([] if it has none)."""
    lines = README.splitlines()
    if SKIP_TABLE not in lines:
        return []
    start = lines.index(SKIP_TABLE)
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or lines[i][:1] != "|")
    return lines[start:end]


def skip_table() -> dict[str, str]:
    """Each test the README lists as skipping -> when ("not root")."""
    rows = [line.strip("|").split(" | ") for line in skip_table_lines()[2:]]
    return {test.strip().strip("`"): when.strip() for test, when, *_why in rows}


def test_the_tests_that_can_skip_are_exactly_the_ones_the_readme_lists_and_when() -> None:
    found = {skip.site: skip.when for skip in skips()}
    unworded = set(found.values()) - set(CONDITIONS)
    assert unworded == set(), f"say in CONDITIONS and the README when these skip: {found}"
    assert skip_table() == {site: CONDITIONS[when] for site, when in found.items()}


def test_the_readme_claims_no_skips_only_when_nothing_can_skip() -> None:
    claims_none = re.search(r"\bno skips\b", PROSE, re.IGNORECASE) is not None
    assert claims_none == (skips() == set()), "the README's claim about skips is untrue"
    if skip_table() and set(skip_table().values()) == {"not root"}:
        assert "As root nothing is skipped" in PROSE


def fixtures() -> dict[str, list[str]]:
    """Every fixture in tests/*.py -> the fixtures it takes (the first definition of a name)."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "fixture" in ast.unparse(d) for d in node.decorator_list
            ):
                found.setdefault(node.name, [a.arg for a in node.args.args])
    return found


def test_no_test_the_readme_cites_as_proof_can_be_skipped() -> None:
    """No skip in a cited test, in a fixture it takes (directly or through other fixtures),
    at its module's level, or at the level of a cited file. The skip table is no citation."""
    proof = "\n".join(line for line in README.splitlines() if line not in skip_table_lines())
    sites = {skip.site for skip in skips()}
    graph = fixtures()
    skippable = sorted(set(re.findall(r"`(tests/test_[a-z0-9_]+\.py)", proof)) & sites)
    for path, test in sorted(cited_tests(proof)):
        needed, todo = set(), [a.arg for a in function(path, test).args.args]
        while todo:
            name = todo.pop()
            if name in graph and name not in needed:
                needed.add(name)
                todo += graph[name]
        places = {f"{path}::{test}", path} | {s for s in sites if s.split("::")[-1] in needed}
        skippable += [f"{path}::{test} via {site}" for site in sorted(places & sites)]
    assert skippable == []


def test_the_farming_bounds_the_readme_states_are_derived_from_the_defaults() -> None:
    """The bold bounds (any minute, any 24 h) are tests.models.farming_bound's, under the
    default settings; a change to the catalogue or the budgets must change the README."""
    settings = ApiSettings()
    minute = farming_bound(settings, 60_000, days=2)
    day = farming_bound(settings, 86_400_000, days=2)
    cold_minute = farming_bound(settings, 60_000, days=1, cold=True)
    for pattern, derived in (
        (r"(\d[\d,]*) points in any minute", minute),
        (r"(\d[\d,]*) in any 24 h", day),
        (r"\((\d[\d,]*) in\s+a first minute from cold\)", cold_minute),
    ):
        stated = {int(n.replace(",", "")) for n in re.findall(pattern, README)}
        assert stated == {derived}, pattern
