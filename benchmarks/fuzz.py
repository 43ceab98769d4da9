"""The error-contract fuzzer (issue 14, NeuRI-style, with hypothesis): how many cases it tried, what it found.

    python benchmarks/fuzz.py                       # 500 examples per target, the installed oplab
    python benchmarks/fuzz.py --examples 200 --targets train generate model:fno
    PYTHONPATH=/tmp/oplab-before/src python benchmarks/fuzz.py --examples 200 --out /tmp/fuzz-before.json

It runs the strategies and checks of tests/test_fuzz.py (the CI's fuzzer, on a small budget
there) for every CLI target and every registered model, with a larger budget, and records every
failing example and goes on. Unlike CI it includes the known-open generation findings
(``--skip-known-open`` leaves them out, as CI does; see tests/test_fuzz.py). Failures are deduplicated:
an escaping exception by (exception type, innermost oplab frame ``oplab/<module>.py:<line>``),
a broken rule (a hang, a second stderr line, a changed pre-existing file, a model check) by
(target, rule). Each distinct failure is then shrunk to a small reproducer (option groups, or
model arguments, removed one at a time while the same failure reproduces). Writes a JSON report
(default benchmarks/fuzz.json) and prints a table.

Works against another code tree through PYTHONPATH: only ``oplab.cli.main``,
``oplab.models`` (``available``, ``get``, ``from_config``, ``presets.derive``),
``oplab.errors.ParameterError``, ``oplab.problems`` and ``oplab.data.generation.generate`` are
used, and ``oplab.layers.spectral.SpectralConv`` and ``Operator.resolution_invariance`` where
they exist (an older tree's models are held to their ``resolution_invariant`` flag); flags an
older CLI lacks are click usage errors (exit 2), which the contract accepts.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the strategies and checks: the CI's fuzzer (one copy of the code)
TEST_FILE = HERE.parent / "tests" / "test_fuzz.py"


def load_fuzz_module():
    spec = importlib.util.spec_from_file_location("oplab_test_fuzz", TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Recorder:
    """Distinct failures by key, with the count, the targets and the smallest example seen."""

    def __init__(self):
        self.failures: dict[tuple, dict] = {}

    def add(self, violation, example, size: int, argv=None, stderr: str = "") -> None:
        entry = self.failures.setdefault(violation.key, {
            "key": list(violation.key), "rule": violation.rule, "targets": [], "count": 0, "size": None,
            "example": None, "argv": None, "message": "", "stderr": ""})
        entry["count"] += 1
        if violation.target not in entry["targets"]:
            entry["targets"].append(violation.target)
        if entry["size"] is None or size < entry["size"]:
            entry.update(size=size, example=example, argv=argv, message=violation.detail, stderr=stderr,
                         target=violation.target)


def shrink_plan(fz, fx, plan, key, timeout, figures, budget_s: float = 60.0):
    """Remove option groups one at a time while ``key`` still fails; returns (plan, outcome, violation)."""
    deadline = time.monotonic() + budget_s

    def failing(p):
        out = fz.run_plan(p, fx, timeout=timeout, figures=figures)
        hit = [v for v in fz.contract_violations(p, out) if v.key == key]
        return (out, hit[0]) if hit else None

    best = failing(plan)
    if best is None:  # flaky: keep what was seen
        return plan, None, None
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for i in reversed(range(len(plan.groups))):
            if time.monotonic() > deadline:
                break
            candidate = plan.without(i)
            got = failing(candidate)
            if got is not None:
                plan, best, changed = candidate, got, True
    return plan, best[0], best[1]


def shrink_case(fz, case, key, budget_s: float = 30.0):
    deadline = time.monotonic() + budget_s

    def failing(c):
        _, found = fz.model_violations(c)
        hit = [v for v in found if v.key == key]
        return hit[0] if hit else None

    best = failing(case)
    if best is None:
        return case, None
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for k, _ in list(case.overrides):
            candidate = case.without(k)
            got = failing(candidate)
            if got is not None:
                case, best, changed = candidate, got, True
                break
    return case, best


def tree_of(oplab) -> dict:
    root = Path(oplab.__file__).resolve().parents[2]
    commit = ""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        commit += " (+ uncommitted changes in src/)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"path": str(Path(oplab.__file__).resolve().parent), "commit": commit, "version": oplab.__version__}


def _kind_of(path: str) -> str:
    """A left-behind path as a kind: its last component with numbers and random parts removed."""
    import re

    name = path.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"\d+", "N", name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="examples per target (default 500)")
    parser.add_argument("--targets", nargs="*", help="CLI targets and/or model:NAME (default: all)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one CLI example may take (a hang)")
    parser.add_argument("--seed", type=int, help="a random seed (default: derandomized, as in the test)")
    parser.add_argument("--out", type=Path, default=HERE / "fuzz.json", help="JSON report")
    parser.add_argument("--no-shrink", action="store_true", help="report the smallest example seen, unshrunk")
    parser.add_argument("--figures", action="store_true", help="render the training figures (slower)")
    parser.add_argument("--compile-examples", type=int, default=0,
                        help="also compare eager with torch.compile on this many configurations per model "
                             "(tens of seconds each on a CPU; default 0)")
    parser.add_argument("--skip-known-open", action="store_true",
                        help="leave out the known-open generation findings, as CI does (tests/test_fuzz.py)")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit of this process (a runaway allocation fails instead of "
                             "taking the machine; 0: none)")
    args = parser.parse_args(argv)

    if args.memory_gb:
        limit = int(args.memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from hypothesis import Phase, given, seed, settings

    fz = load_fuzz_module()
    import oplab

    if not args.skip_known_open and "known_open" in inspect.signature(fz.generate_plans).parameters:
        fz.CLI_TARGETS["generate"] = fz.generate_plans(known_open=True)

    models = fz.models.available()
    all_targets = list(fz.CLI_TARGETS) + [f"model:{m}" for m in models]
    targets = args.targets or all_targets
    unknown = [t for t in targets if t not in all_targets]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; valid: {all_targets}")
    base = settings(fz.CI, max_examples=args.examples, phases=[Phase.explicit, Phase.generate],
                    derandomize=args.seed is None)

    def seeded(f):
        return seed(args.seed)(f) if args.seed is not None else f

    recorder = Recorder()
    notes: dict[tuple, dict] = {}
    stats: dict[str, dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oplab-fuzz-") as tmp:
        fx = fz.Fixture(Path(tmp))
        for target in targets:
            t0 = time.perf_counter()
            s = stats[target] = {"tried": 0, "failing_examples": 0, "seconds": 0.0}
            if target.startswith("model:"):
                name = target.split(":", 1)[1]
                s["refused"] = 0

                @settings(base)
                @given(case=fz.model_cases(name))
                def body(case):
                    s["tried"] += 1
                    verdict, found = fz.model_violations(case)
                    s["refused"] += verdict == "refused"
                    s["failing_examples"] += bool(found)
                    for v in found:
                        recorder.add(v, case, len(repr(case)))
            else:

                @settings(base)
                @given(plan=fz.CLI_TARGETS[target])
                def body(plan):
                    s["tried"] += 1
                    out = fz.run_plan(plan, fx, timeout=args.timeout, figures=args.figures)
                    s.setdefault("exit_codes", {})
                    code = "exception" if out.exc_type else str(out.code)
                    s["exit_codes"][code] = s["exit_codes"].get(code, 0) + 1
                    found = fz.contract_violations(plan, out)
                    s["failing_examples"] += bool(found)
                    left = fz.leftovers(plan, out)
                    if left:
                        s["left_files_after_exit_2"] = s.get("left_files_after_exit_2", 0) + 1
                        kinds = tuple(sorted({_kind_of(p) for p in left}))
                        note = notes.setdefault((target, kinds), {"target": target, "left": list(kinds), "count": 0})
                        note["count"] += 1
                        if "reproducer" not in note or len(repr(plan)) < len(note["reproducer"]):
                            note.update(reproducer=repr(plan), files=left[:6],
                                        stderr=out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else "")
                    for v in found:
                        recorder.add(v, plan, len(repr(plan)), argv=out.argv, stderr=out.stderr.strip()[-600:])

            seeded(body)()
            if target.startswith("model:") and args.compile_examples:
                s["compiled"] = 0

                @settings(base, max_examples=args.compile_examples)
                @given(case=fz.model_cases(target.split(":", 1)[1]))
                def compiled(case):
                    s["compiled"] += 1
                    for v in fz.compile_violations(case):
                        recorder.add(v, case, len(repr(case)))
                        recorder.failures[v.key]["stage"] = "compile"

                seeded(compiled)()
            s["seconds"] = round(time.perf_counter() - t0, 1)
            found_here = sum(1 for e in recorder.failures.values() if target in e["targets"])
            print(f"{target:<22} {s['tried']:>5} examples {s['seconds']:>7.1f} s  "
                  f"{s['failing_examples']:>4} failing  {found_here} distinct", flush=True)

        # shrink every distinct failure to a small reproducer
        report = []
        for key, entry in recorder.failures.items():
            example = entry["example"]
            if not args.no_shrink:
                if isinstance(example, fz.Plan):
                    example, out, v = shrink_plan(fz, fx, example, key, args.timeout, args.figures)
                    if out is not None:
                        entry.update(argv=out.argv, message=v.detail, stderr=out.stderr.strip()[-600:])
                    else:
                        entry["flaky"] = True
                elif entry.get("stage") != "compile":
                    example, v = shrink_case(fz, example, key)
                    if v is not None:
                        entry["message"] = v.detail
                    else:
                        entry["flaky"] = True
            entry["reproducer"] = repr(example)
            entry.pop("example")
            entry.pop("size")
            if entry["argv"] is not None:
                entry["argv"] = [a.replace(tmp, "$TMP") for a in entry["argv"]]
            entry["message"] = entry["message"].replace(tmp, "$TMP")
            entry["stderr"] = entry["stderr"].replace(tmp, "$TMP")
            report.append(entry)

    report.sort(key=lambda e: (e["targets"][0], e["rule"], str(e["key"])))
    result = {
        "oplab": tree_of(oplab),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "examples_per_target": args.examples,
        "seed": args.seed if args.seed is not None else "derandomized",
        "known_open_included": not args.skip_known_open,
        "timeout_s": args.timeout,
        "seconds": round(time.perf_counter() - started, 1),
        "examples_tried": sum(s["tried"] for s in stats.values()),
        "distinct_failures": len(report),
        "targets": stats,
        "failures": report,
        "left_files_after_exit_2": sorted(notes.values(), key=lambda n: (n["target"], n["left"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    print(f"\noplab at {result['oplab']['path']} {result['oplab']['commit']}")
    print(f"{result['examples_tried']} examples in {result['seconds']:.0f} s; {len(report)} distinct failures\n")
    for i, e in enumerate(report, 1):
        print(f"{i:>3}. [{', '.join(e['targets'])}] {e['rule']}  key={tuple(e['key'])}  x{e['count']}")
        print(f"     {e['reproducer']}")
        first = e["message"].strip().splitlines()[0] if e["message"].strip() else ""
        print(f"     -> {first[:300]}")
    if notes:
        print("\nnot failures, for reading: files left behind by refused commands (exit 2)")
        for n in sorted(notes.values(), key=lambda n: (n["target"], n["left"])):
            print(f"  [{n['target']}] {', '.join(n['left'])} x{n['count']}: {n['reproducer']}")
            print(f"     {n['files']} -- {n['stderr']}")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
