"""``report.md`` and ``report.json`` of a benchmark suite: one table per problem (train cases), one
per other case kind (fine-tuning, HyPINO, PROSE, inversion: :mod:`oplab.bench.kinds`)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _fmt(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def _labels(rows: list[dict]) -> list[str]:
    labels = []
    for r in rows:
        for label in (r.get("test") or {}):
            if label not in labels:
                labels.append(label)
    return labels


def _published(case: dict):
    pub = case.get("published") or {}
    return pub.get("l2"), str(pub.get("resolution", "")), pub.get("source", "")


def _peer_row(peer: dict) -> dict:
    return {"name": f"↳ peer: {peer.get('library')} {peer.get('version', '')}".rstrip(), "test": peer.get("test"),
            "params": peer.get("params"), "epochs": peer.get("epochs"), "epoch_seconds": peer.get("epoch_seconds"),
            "train_seconds": peer.get("train_seconds"), "peak_memory_mib": peer.get("peak_memory_mib"),
            "inference_seconds_per_sample": peer.get("inference_seconds_per_sample"),
            "model": {"name": _PEER_MODELS.get(peer.get("library"), ""), **(peer.get("model") or {})}}


_PEER_MODELS = {"neuraloperator": "FNO", "deepxde": "DeepONetCartesianProd"}


def render(report: dict, out: Path) -> str:
    m = report["machine"]
    lines = [f"# oplab benchmark report: suite `{report['suite']}`", "",
             report.get("description", "").strip(), "",
             f"- date: {report['date']}",
             f"- machine: {m.get('cpu')}, {m.get('cores')} cores, torch threads {m.get('torch_threads')}"
             + (f", GPU {m['gpu']}" if m.get("gpu") else "") + f"; device `{m.get('device')}`",
             f"- software: oplab {m.get('oplab')}, torch {m.get('torch')}, numpy {m.get('numpy')}, "
             f"python {m.get('python')}",
             f"- suite file: `{report.get('source')}`"]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    lines += ["", "Errors are relative L2 of the final model on the test samples (mean over samples), per test "
              "resolution; time per epoch is the median training loop of an epoch (evaluation excluded); "
              "peak memory is the case process's maximum RSS on the CPU (torch included) or CUDA's max "
              "allocated; inference is per sample on a batch of 50. A peer row (↳) ran the same data in its "
              "own library and environment in the same suite run; its ratio column is oplab ÷ peer.", ""]
    sets = report.get("datasets") or {}
    if sets:
        lines += ["## Data sets", "", "| data set | problem | resolution | samples | solver | generation s (workers) |",
                  "|---|---|---|---|---|---|"]
        for key, d in sets.items():
            secs = f"{d['seconds']:.0f} ({d.get('workers')})" if d.get("seconds") is not None else "—"
            lines.append(f"| {key} | {d.get('problem')} | {d.get('resolution', '')} | {d.get('n')} | "
                         f"{d.get('solver', '')} | {secs} |")
        lines.append("")
    lines += comparisons(report)
    lines += cfdbench_tables(report)
    by_problem: dict[str, list] = {}
    for r in report["cases"]:
        if _kind(r) != "train":
            continue
        problem = (r.get("dataset") or {}).get("problem") or r.get("case", {}).get("dataset", "?")
        by_problem.setdefault(problem, []).append(r)
    for problem, rows in by_problem.items():
        lines += [f"## {problem}", ""]
        ok = [r for r in rows if "failed" not in r]
        peer_rows = [r["peer"] for r in ok if isinstance(r.get("peer"), dict) and "test" in r["peer"]]
        labels = _labels(ok + peer_rows)
        head = ["case", "model", "params", "epochs", "s/epoch", "train s", "peak MiB", "infer ms/sample",
                *[f"L2@{k}" for k in labels], "published (res)", "ours/published"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            if "failed" in r:
                lines.append(f"| {r['name']} | failed: {r['failed']} |")
                continue
            pub, pub_res, _ = _published(r["case"])
            ours = (r["test"].get(pub_res) or {}).get("l2") if pub is not None else None
            lines.append(_row(r, labels, pub, pub_res, ours))
            peer = r.get("peer")
            if isinstance(peer, dict) and "test" in peer:
                lines.append(_row(_peer_row(peer), labels, None, "", None))
                ratio = []
                if peer.get("epoch_seconds"):
                    ratio.append(f"time per epoch {r['epoch_seconds'] / peer['epoch_seconds']:.2f}x")
                for k in labels:
                    a, b = (r["test"].get(k) or {}).get("l2"), (peer["test"].get(k) or {}).get("l2")
                    if a is not None and b:
                        ratio.append(f"L2@{k} {a / b:.2f}x")
                if ratio:
                    lines.append(f"| | oplab ÷ {peer['library']}: {', '.join(ratio)} |")
            elif isinstance(peer, dict):
                lines.append(f"| ↳ peer {peer.get('library', '')} | not run: {peer.get('skipped') or peer.get('failed')} |")
        lines.append("")
        for r in ok:
            notes = []
            model = {k: v for k, v in (r.get("model") or {}).items()}
            notes.append(f"model `{json.dumps(model)}`")
            t = r.get("train") or {}
            notes.append(f"training: {t.get('optimizer')} lr {t.get('lr')} {t.get('scheduler')}, batch {t.get('batch_size')}, "
                         f"loss {t.get('loss')}, seed {r.get('seed')}"
                         + (f", budget {t.get('budget_minutes')} min" if t.get("budget_minutes") else ""))
            if t.get("task", "map") != "map":
                notes.append(f"task {t['task']}: window {t.get('window')}"
                             + (f", bundle {t.get('bundle')}, unroll {t.get('unroll')}"
                                + (" (pushforward)" if t.get("pushforward") else "") if t["task"] == "autoregressive" else "")
                             + (f", from state {t['first_state']}" if t.get("first_state") else ""))
            roll = r.get("rollout")
            if roll and roll.get("per_step"):
                per = roll["per_step"]
                notes.append(f"rollout over {len(per)} states: relative L2 per state {per[0]:.4f} (first), "
                             f"{per[len(per) // 2]:.4f} (middle), {per[-1]:.4f} (last); {roll['l2']:.4f} over all")
            pub, pub_res, src = _published(r["case"])
            if pub is not None:
                notes.append(f"published {pub} at {pub_res}: {src}")
            lines.append(_notes(r, out, notes))
        lines.append("")
    lines += kind_tables(report, out)
    return "\n".join(lines)


def _kind(r: dict) -> str:
    return r.get("kind") or (r.get("case") or {}).get("kind") or "train"


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _notes(r: dict, out: Path, extra: list | None = None) -> str:
    notes = list(extra or [])
    if r.get("foreign_cores") is not None and r["foreign_cores"] > 0.25:
        notes.append(f"other programs used {r['foreign_cores']:.2f} cores meanwhile: timings are not clean")
    if (r.get("case") or {}).get("note"):
        notes.append(r["case"]["note"])
    figs = " ".join(f"[{k}]({os.path.relpath(v, out)})" for k, v in (r.get("figures") or {}).items())
    return f"- **{r['name']}**: " + "; ".join(notes) + (f". Figures: {figs}" if figs else "")


def kind_tables(report: dict, out: Path) -> list[str]:
    """One table per case kind other than ``train`` (:mod:`oplab.bench.kinds`), each case's figures
    and notes below it."""
    groups: dict[str, list] = {}
    for r in report["cases"]:
        if _kind(r) != "train":
            groups.setdefault(_kind(r), []).append(r)
    lines: list[str] = []
    for kind, render_kind in (("finetune", _finetune_table), ("hypino", _hypino_table), ("prose", _prose_table),
                              ("invert", _invert_table)):
        rows = groups.get(kind)
        if not rows:
            continue
        head, intro, cells = render_kind(rows)
        lines += [intro, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            lines.append(f"| {r['name']} | failed: {r['failed']} |" if "failed" in r
                         else "| " + " | ".join([r["name"], *cells(r)]) + " |")
        lines.append("")
        lines += [_notes(r, out, _extra(r)) for r in rows if "failed" not in r]
        lines.append("")
    return lines


def _extra(r: dict) -> list:
    t, m = r.get("train") or {}, r.get("metrics") or {}
    if _kind(r) == "finetune":
        return [f"model `{json.dumps(r.get('model'))}` from `{(r.get('parent') or {}).get('run_dir')}` "
                f"(checkpoint {(r.get('parent') or {}).get('checkpoint')})",
                f"training: {t.get('optimizer')} lr {t.get('lr')} {t.get('scheduler')}, batch {t.get('batch_size')}, "
                f"normalisers {m.get('normalizers')}"
                + (f", LoRA rank {m['lora']['rank']} alpha {m['lora']['alpha']}" if m.get("lora") else "")
                + (f", head {', '.join(m['head'])}" if m.get("head") else "")
                + (f", budget {t.get('budget_minutes')} min" if t.get("budget_minutes") else "")]
    if _kind(r) in ("hypino", "prose"):
        return [f"model `{json.dumps(r.get('model'))}`", f"training `{json.dumps(t)}`"]
    if _kind(r) == "invert":
        per = ", ".join(f"{row['sample']}: {row['coef_l2']:.3f}" for row in m.get("rows", []))
        return [f"coefficient L2 per test sample (index in the data set) {per}"]
    return []


def _finetune_table(rows):
    labels = _labels([r for r in rows if "failed" not in r])
    head = ["case", "parent", "data set", "method", "K", "trainable / total params", "epochs", "train s",
            "parent L2 (own test)", *[f"parent zero-shot L2@{k}" for k in labels],
            *[f"fine-tuned L2@{k}" for k in labels], "zero-shot ÷ fine-tuned"]
    intro = ("## Fine-tuning\n\nThe parent case's run (a train case of this suite) fine-tuned on the first K samples "
             "of a new data set (`oplab finetune`); the next samples validate and choose the checkpoint, the test "
             "samples are the data set's last. Parent zero-shot: the parent on the same test samples before "
             "fine-tuning; the parent's own error is on its own test set.")

    def cells(r):
        m, par = r.get("metrics") or {}, r.get("parent") or {}
        d = r.get("dataset") or {}
        family = (d.get("params") or {}).get("family")
        zero = [_fmt((par.get("zero_shot", {}).get(k) or {}).get("l2")) for k in labels]
        tuned = [_fmt((r["test"].get(k) or {}).get("l2")) for k in labels]
        z, f = m.get("zero_shot_l2"), m.get("l2")
        return [par.get("case", ""), f"{r['case'].get('dataset')}" + (f" ({family})" if family else ""),
                str(m.get("method")), str(m.get("k")),
                f"{_fmt(m.get('trainable_params'), ',')} / {_fmt(m.get('total_params'), ',')}",
                _fmt(r.get("epochs"), "d"), _fmt(r.get("train_seconds"), ".0f"), _fmt(m.get("parent_l2")), *zero,
                *tuned, f"{z / f:.2f}x" if z is not None and f else "—"]
    return head, intro, cells


def _hypino_table(rows):
    ok = [r for r in rows if "failed" not in r]
    n_rounds = max((r["metrics"]["rounds"] for r in ok), default=0)
    head = ["case", "params", "steps (best)", "train s", "validation L2", "test problems", "zero-shot",
            *[f"round {i}" for i in range(1, n_rounds + 1)], "improved by refinement"]
    intro = ("## HyPINO\n\nA hypernetwork trained on manufactured problems of -Lap u + k u = f on random domains "
             "(`oplab hypino-train`), tested on held-out manufactured problems (another seed): relative L2 error "
             "of the generated PINN zero-shot and of the sum of PINNs after each refinement round, median (mean) "
             "over the test problems; improved: the fraction whose last round beats zero-shot.")

    def cells(r):
        m = r["metrics"]
        per = [f"{md:.3f} ({mn:.3f})" for md, mn in zip(m["median"], m["mean"])]
        per += ["—"] * (n_rounds + 1 - len(per))
        return [_fmt(r.get("params"), ","), f"{m['steps']} ({m['best_step']})", _fmt(r.get("train_seconds"), ".0f"),
                _fmt(m.get("val_error")), str(m["test_problems"]), *per, _pct(m.get("improved"))]
    return head, intro, cells


def _prose_table(rows):
    ok = [r for r in rows if "failed" not in r]
    modes = []
    for r in ok:
        modes += [s for s in r["metrics"]["decoding"] if s not in modes]
    words = {"none": "data only", "noisy": "noisy equation", "exact": "exact equation"}
    head = ["case", "params", "steps (best)", "train s", "samples train/val/test", "L2 exact equation",
            "L2 noisy equation", "L2 data only", "L2 hold last state",
            *[f"decoded from {words[s]}: exact / valid / structure / within tol" for s in modes]]
    intro = ("## PROSE\n\nA multimodal transformer trained on ODE trajectories and their equations "
             "(`oplab.models.prose`); on the test set (its own seed): the mean relative L2 error of the solution "
             "at the query times given the exact equation, a noisy one (5% per coefficient) or none (data only), "
             "beside holding the last observed state; and the fractions of equations decoded greedily token for "
             "token, valid, with the right structure, and with every coefficient within the tolerance.")

    def cells(r):
        m = r["metrics"]
        sol = m["solution_rel_l2"]
        dec = [(lambda d: f"{_pct(d['exact'])} / {_pct(d['valid'])} / {_pct(d['structure'])} / "
                          f"{_pct(d['within_tol'])}")(m["decoding"][s]) if s in m["decoding"] else "—" for s in modes]
        return [_fmt(r.get("params"), ","), f"{m['steps']} ({m['best_step']})", _fmt(r.get("train_seconds"), ".0f"),
                f"{m['n_train']}/{m['n_val']}/{m['n_test']}", *[_fmt(sol[k]["mean"]) for k in
                                                               ("exact", "noisy", "none", "hold_last")], *dec]
    return head, intro, cells


def _invert_table(rows):
    head = ["case", "parent (its test L2)", "prior", "sensors", "noise", "test samples", "coefficient L2",
            "phase accuracy", "chi² per value", "training mean: coefficient L2 / phase / chi²", "s per inversion"]
    intro = ("## Inversion\n\nThe parent case's operator inverted on its own held-out test samples (`oplab invert`, "
             "Adam with restarts): sensors drawn uniformly, the true output there plus Gaussian noise of the given "
             "fraction of max|u|. Coefficient L2: relative error of the estimated input; phase accuracy: the "
             "fraction of nodes on the right side of the two phases' midpoint (two-phase Darcy only); chi² per "
             "observed value through the surrogate (about 1 when the data are explained to their noise). The "
             "training inputs' mean field is the no-data reference. Means over the test samples.")

    def cells(r):
        m, par = r["metrics"], r.get("parent") or {}
        return [f"{par.get('case')} ({_fmt(m.get('parent_test_l2'))})", str(m["prior"]), str(m["sensors"]),
                _pct(m["noise"]) if m["noise"] >= 0.01 else f"{m['noise']:g}", str(m["samples"]),
                _fmt(m["coef_l2"], ".3f"), _fmt(m.get("phase_accuracy"), ".3f"), _fmt(m["chi2"], ".2f"),
                f"{_fmt(m['baseline_coef_l2'], '.3f')} / {_fmt(m.get('baseline_phase_accuracy'), '.3f')} / "
                f"{_fmt(m['baseline_chi2'], '.2f')}", _fmt(m["seconds"], ".1f")]
    return head, intro, cells


def comparisons(report: dict) -> list[str]:
    """One ranking table per ``compare`` label: the cases by their error on the first test
    set, each as a ratio to the winner; a line says who wins and by how much."""
    groups: dict[str, list] = {}
    for r in report["cases"]:
        label = (r.get("case") or {}).get("compare")
        if label and "failed" not in r and r.get("test"):
            groups.setdefault(label, []).append(r)
    lines = []
    for label, rows in groups.items():
        labels = _labels(rows)
        # rank on the first test set every case of the group was evaluated on
        common = [k for k in labels if all(k in r["test"] for r in rows)]
        first = (common or labels)[0]

        def error(r):  # a missing or non-finite error ranks last
            value = (r["test"].get(first) or {}).get("l2")
            return value if value is not None and math.isfinite(value) else math.inf

        rows = sorted(rows, key=error)
        best = error(rows[0])
        budgets = sorted({(r.get("train") or {}).get("budget_minutes") for r in rows} - {None})
        lines += [f"## Comparison: {label}", "",
                  "Ranked by relative L2 at " + first
                  + (f"; every case trained under the same budget of {', '.join(f'{b:g}' for b in budgets)} min"
                     if len(budgets) == 1 else "") + ".", "",
                  "| rank | case | model | params | epochs | s/epoch | " + " | ".join(f"L2@{k}" for k in labels)
                  + f" | L2@{first} ÷ best |", "|" + "---|" * (6 + len(labels) + 1)]
        finite = math.isfinite(best) and best > 0

        def ratio(r) -> str:
            return f"{error(r) / best:.2f}x" if finite and math.isfinite(error(r)) else "—"

        for i, r in enumerate(rows, 1):
            model = (r.get("model") or {}).get("name", "")
            cells = [str(i), r["name"], model, _fmt(r.get("params"), ","), _fmt(r.get("epochs"), "d"),
                     _fmt(r.get("epoch_seconds"), ".3g"),
                     *[_fmt((r["test"].get(k) or {}).get("l2")) for k in labels], ratio(r)]
            lines.append("| " + " | ".join(cells) + " |")
        if len(rows) > 1 and finite:
            lines += ["", f"**Winner: {rows[0]['name']}** (L2@{first} {best:.4f}); the runner-up "
                      f"{rows[1]['name']} has {ratio(rows[1])} its error"
                      + (f", the last ({rows[-1]['name']}) {ratio(rows[-1])}" if len(rows) > 2 else "") + "."]
        lines.append("")
    return lines


def cfdbench_tables(report: dict) -> list[str]:
    """One table per problem and subset of the cases run with ``protocol: cfdbench``: CFDBench's
    metrics (:mod:`oplab.eval.cfdbench`) of the one-step predictions and of the rollout, the
    identity row (the previous true frame as the prediction) first, and the published figure the
    case names (``published: {nmse, source}``)."""
    groups: dict[tuple, list] = {}
    for r in report["cases"]:
        if "failed" not in r and r.get("cfdbench"):
            d = r.get("dataset") or {}
            groups.setdefault((d.get("problem", "?"), (d.get("params") or {}).get("subset", "bc")), []).append(r)
    if not groups:
        return []
    lines = ["## CFDBench protocol", "",
             "CFDBench's metrics (Luo, Chen & Zhang 2023, section 4.6) on the velocity (u, v) of each test frame, "
             "prediction and label masked by the geometry, averaged over the test frames of the test cases "
             "(the last cases of each set: a case-level split). One step: each frame from the true frame "
             "before it; rollout: every frame from the first one, the model fed its own outputs. Identity: the "
             "previous true frame as the prediction. Published: the figure the case names (CFDBench's data came "
             "from ANSYS Fluent in physical units; these cases are oplab's own solver in scaled units, so the "
             "published column is a scale for the difficulty, not the same test).", ""]
    for (problem, subset), rows in groups.items():
        first = rows[0]["cfdbench"]
        lines += [f"### {problem} / {subset} ({first['cases']} test cases, {first['frames']} frames)", "",
                  "| model | params | epochs | one-step NMSE | MSE | RMSE | MAE | rollout NMSE | NMSE last step "
                  "| published NMSE |", "|" + "---|" * 10]
        ident = first["identity"]
        lines.append(f"| identity | | | {ident['nmse']:.3g} | {ident['mse']:.3g} | {ident['rmse']:.3g} | "
                     f"{ident['mae']:.3g} | | | |")
        sources = []
        for r in sorted(rows, key=lambda r: r["cfdbench"]["one_step"]["nmse"]):
            one, roll = r["cfdbench"]["one_step"], r["cfdbench"]["rollout"]
            pub = r["case"].get("published") or {}
            if pub.get("nmse") is not None and pub.get("source") and pub["source"] not in sources:
                sources.append(pub["source"])
            lines.append(f"| {r['name']} | {_fmt(r.get('params'), ',')} | {_fmt(r.get('epochs'), 'd')} | "
                         f"{one['nmse']:.3g} | {one['mse']:.3g} | {one['rmse']:.3g} | {one['mae']:.3g} | "
                         f"{roll['nmse']:.3g} | {roll['nmse_per_step'][-1]:.3g} | "
                         + (f"{float(pub['nmse']):.3g}" + (f" [{sources.index(pub['source']) + 1}]" if pub.get("source")
                                                            else "") if pub.get("nmse") is not None else "") + " |")
        lines += [""] + [f"[{i}] {src}" for i, src in enumerate(sources, 1)] + ([""] if sources else [])
    return lines


def _row(r: dict, labels: list, pub, pub_res: str, ours) -> str:
    model = (r.get("model") or {}).get("name", r.get("model") if isinstance(r.get("model"), str) else "")
    cells = [r["name"], str(model), _fmt(r.get("params"), ","), _fmt(r.get("epochs"), "d"),
             _fmt(r.get("epoch_seconds"), ".3g"), _fmt(r.get("train_seconds"), ".0f"),
             _fmt(r.get("peak_memory_mib"), ".0f"),
             _fmt(None if r.get("inference_seconds_per_sample") is None else r["inference_seconds_per_sample"] * 1e3, ".3f")]
    cells += [_fmt(((r.get("test") or {}).get(k) or {}).get("l2")) for k in labels]
    cells += [f"{pub} ({pub_res})" if pub is not None else "", f"{ours / pub:.2f}x" if ours and pub else ""]
    return "| " + " | ".join(cells) + " |"


def thin_curves(report: dict, points: int = 200) -> dict:
    """The report with each training curve cut to about ``points`` entries (first and last kept);
    the whole curves stay in each case's ``result.json`` and run folder."""
    cases = []
    for case in report["cases"]:
        curve = case.get("curve")
        if curve and len(curve) > points:
            step = -(-len(curve) // points)
            keep = curve[::step]
            if keep[-1] is not curve[-1]:
                keep.append(curve[-1])
            case = {**case, "curve": keep}
        cases.append(case)
    return {**report, "cases": cases}


def write_report(report: dict, out: Path) -> None:
    out = Path(out)
    report = thin_curves(report)
    for name, text in (("report.json", json.dumps(report, indent=1)), ("report.md", render(report, out))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
