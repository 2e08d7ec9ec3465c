"""The package's structural promises: one training loop, one optimizer factory, typed configs, no import
cycles, one home per paper, and every departure of a `full` profile from its paper explained."""
import ast
import dataclasses
import re
from pathlib import Path

import pytest

import eobook
from eobook.chapters import CHAPTERS

PACKAGE = Path(eobook.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def import_graph() -> dict[str, set[str]]:
    """module -> eobook modules it imports, at any depth of the file (function-level imports included)."""
    modules = {module_name(p)[0]: p for p in SOURCES}
    graph = {}
    for name, path in modules.items():
        is_package = module_name(path)[1]
        here = name.split(".") if is_package else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                    else node.module or ""
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = edges & set(modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert "eobook.train.loop" in graph["eobook.train"]  # the graph sees package re-exports
    assert cycles(graph) == []


def occurrences(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [f"{p.relative_to(PACKAGE)}:{i}" for p in SOURCES for i, line in enumerate(p.read_text().splitlines(), 1)
            if regex.search(line)]


def test_one_training_loop():
    places = occurrences(r"\.backward\(")
    assert len(places) == 1 and places[0].startswith("train/loop.py:"), places


def test_one_optimizer_factory():
    built = occurrences(r"torch\.optim\.(AdamW|Adam|SGD|RMSprop|LBFGS)\(")
    assert built and all(place.startswith("train/optim.py:") for place in built), built


def test_methods_take_their_own_config_class():
    assert occurrences(r"cfg: Any") == []
    untyped = [f"{p.relative_to(PACKAGE)}:{node.lineno}" for p in SOURCES for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.arg) and node.arg == "cfg" and node.annotation is None]
    assert untyped == []


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_one_home_per_paper(name):
    chapter = CHAPTERS[name]
    home = PACKAGE / "methods" / name
    assert home.is_dir() and (home / "config.py").is_file()
    assert chapter.config.__module__ == f"eobook.methods.{name}.config"
    assert chapter.build_pretraining.__module__.startswith(f"eobook.methods.{name}")
    assert (PACKAGE.parent / "notebooks" / chapter.notebook).is_file()


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_profiles_keep_their_names(name):
    chapter = CHAPTERS[name]
    for profile in ("tiny", "small", "full"):
        cfg = chapter.profile(profile)
        assert cfg.profile == profile
        assert dataclasses.replace(cfg, seed=cfg.seed + 1).profile == profile


@pytest.mark.parametrize("name", list(CHAPTERS))
def test_every_departure_of_full_from_the_paper_has_a_reason(name):
    chapter = CHAPTERS[name]
    assert chapter.paper, "the paper's values of the full profile are recorded"
    assert chapter.unexplained_deviations() == []


def test_a_departure_without_a_reason_is_caught():
    from eobook.config import Paper

    chapter = CHAPTERS["dino_mm"]
    wrong = dataclasses.replace(chapter, paper={**chapter.paper, "epochs": Paper(300, "made up")})
    assert wrong.unexplained_deviations() == ["epochs"]


def test_the_package_diagram_names_real_modules():
    import importlib

    from eobook.viz import PACKAGE_BOXES, package_diagram

    for _, _, names, _ in PACKAGE_BOXES:
        for part in names.split(" / "):   # "eobook.augment / masking / rng"
            if not part.startswith("notebooks/"):
                module = part if part.startswith("eobook.") else f"eobook.{part}"
                importlib.import_module(module.replace("<paper>", "dino_mm"))
    assert len(package_diagram().axes[0].patches) == len(PACKAGE_BOXES)
