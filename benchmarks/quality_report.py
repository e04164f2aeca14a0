"""The quality benchmark's report: its targets, the README's markdown tables and the precision chart.

Pure functions of the results dict that benchmarks/quality.py writes to quality.json, so a saved run can be
redrawn (`quality.py --render`) without training anything.
"""
from __future__ import annotations

import json
from pathlib import Path

TITLES = {"demo": "demo (data/images)", "fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
CORRUPTION_TITLES = {"noise": "noise σ 0.1", "occlusion": "occlusion 25%", "jpeg30": "JPEG q30",
                     "crop90": "crop 90%", "brightness": "brightness ±20%"}
K, MAP_K = 10, 100
PCA = "PCA-30"
HASH_BASELINE = "dHash"  # the perceptual hash the robustness target must also beat
# Issue 13's targets for the shipped default: (dataset, measure, goal, higher is better). Search ranks by L2.
TARGETS = (
    ("demo", "precision@10", 0.36, True),
    ("cifar10", "precision@10", 0.36, True),
    ("fashion-mnist", "precision@10", 0.86, True),
    ("mnist", "precision@10", 0.975, True),
    ("fashion-mnist", "robustness", 0.95, True),
    ("mnist", "robustness", 0.95, True),
    ("cifar10", "robustness", 0.95, True),
    ("demo", "robustness", 0.95, True),
    ("mnist", "reconstruction", 3.00, False),
    ("fashion-mnist", "training seconds", 300, False),
    ("mnist", "training seconds", 300, False),
    ("demo", "training seconds", 180, False),
)


def _name(method: str, default_variant: str) -> str:
    return f"{method} (default)" if method == default_variant else method


def _figure(method: dict, what: str, metric: str = "l2") -> float | None:
    """A method's figure for a measure. Robustness is the service's (codes, then the copy check) where measured."""
    if what == "precision@10":
        return method["retrieval"][metric][f"precision_at_{K}"]
    if what == "robustness":
        if metric == "l2" and "checked" in method["robustness"]:
            metric = "checked"
        return method["robustness"][metric]["mean"]
    if what == "reconstruction":
        return method.get("reconstruction_sse")
    return (method.get("training") or {}).get("seconds")


def _best_of_metrics(method: dict | None, what: str) -> float | None:
    """A baseline's best figure of L2, cosine and (where measured) the copy check: the strongest simple baseline."""
    if not method or what in ("training seconds",):
        return None
    if what == "reconstruction":
        return method.get("reconstruction_sse")
    table = method["retrieval"] if what == "precision@10" else method["robustness"]
    key = f"precision_at_{K}" if what == "precision@10" else "mean"
    return max(v[key] for v in table.values())


def targets(results: dict) -> list[dict]:
    """The shipped default's figures beside the targets it is meant to meet (data sets that were run only).

    A robustness target is met only at 0.95 and at least dHash's mean recall as well.
    """
    default, rows = results["settings"]["default_variant"], []
    for name, what, goal, higher in TARGETS:
        methods = results["datasets"].get(name, {}).get("methods", {})
        method = methods.get(default)
        value = _figure(method, what) if method else None
        if value is None:
            continue
        hashed = _best_of_metrics(methods.get(HASH_BASELINE), what) if what == "robustness" else None
        bar = max(goal, hashed) if hashed is not None else goal
        met = value >= bar if higher else value <= bar
        codes_alone = method["robustness"]["l2"]["mean"] if what == "robustness" else None
        rows.append({"dataset": name, "measure": what, "goal": goal, "higher_is_better": higher, "value": value,
                     "met": met, "pca": _best_of_metrics(methods.get(PCA), what), "dhash": hashed,
                     "codes_alone": codes_alone})
    return rows


def _fmt(measure: str):
    if measure == "training seconds":
        return lambda v: f"{v:.0f}"
    if measure == "reconstruction":
        return lambda v: f"{v:.2f}"
    return lambda v: f"{v:.3f}"


def markdown(results: dict) -> str:
    """The README's tables."""
    s = results["settings"]
    datasets = results["datasets"]
    default = s["default_variant"]
    budget = f"{s['steps']} steps" if s.get("steps") else "TrainConfig's automatic step budget"
    machine = results["machine"]
    features = ", ".join(machine.get("cpu_features") or []) or "no AVX2"
    lines = [f"Code size {s['code_size']}; autoencoders trained on the index images without labels, {budget}"
             + (f"; **subsampled to at most {s['limit']:,} images per split**" if s["limit"] else "")
             + f". {machine['cpus']} CPU cores ({features}), Python {machine['python']}, "
             f"TensorFlow {machine['tensorflow']}.", ""]
    methods = list(dict.fromkeys(m for d in datasets.values() for m in d["methods"]))
    rows = targets(results)
    if rows:
        lines += [f"### The default ({default}) against its targets", "",
                  "Precision by L2 between codes (what search ranks by); robustness as search returns it (the "
                  "codes, then the copy check), with the codes alone in brackets.", "",
                  "| Data set | Measure | PCA-30 (best of L2, cosine, checked) | dHash | Target | Default | Met |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for r in rows:
            fmt = _fmt(r["measure"])
            goal = f"{'≥' if r['higher_is_better'] else '≤'} {fmt(r['goal'])}"
            if r["dhash"] is not None:
                goal += " and ≥ dHash"
            lines.append(f"| {TITLES[r['dataset']]} | {r['measure']} | "
                         f"{fmt(r['pca']) if r['pca'] is not None else ''} | "
                         f"{fmt(r['dhash']) if r['dhash'] is not None else ''} | {goal} | {fmt(r['value'])}"
                         + (f" ({fmt(r['codes_alone'])})" if r.get("codes_alone") is not None else "")
                         + f" | {'yes' if r['met'] else '**no**'} |")
        lines.append("")
    lines += [f"### Precision@{K} (L2 distance between codes; Hamming for the hashes)", "",
              "| Method | " + " | ".join(d["title"] for d in datasets.values()) + " |",
              "|---|" + "---:|" * len(datasets)]
    for m in methods:
        cells = [f"{d['methods'][m]['retrieval']['l2'][f'precision_at_{K}']:.3f}" if m in d["methods"] else ""
                 for d in datasets.values()]
        lines.append(f"| {_name(m, default)} | " + " | ".join(cells) + " |")
    lines += ["", "### Robustness: recall@1 of the original when the query is an edited copy, mean of the five edits",
              "", "Codes alone (L2; Hamming for the hashes), then search as the service runs it (the codes' "
              "shortlist, then the copy check).", "",
              "| Method | " + " | ".join(f"{d['title']} | + check" for d in datasets.values()) + " |",
              "|---|" + "---:|---:|" * len(datasets)]
    for m in methods:
        cells = []
        for d in datasets.values():
            rob = d["methods"].get(m, {}).get("robustness", {})
            cells.append(f"{rob['l2']['mean']:.3f}" if rob else "")
            cells.append(f"{rob['checked']['mean']:.3f}" if "checked" in rob else "")
        lines.append(f"| {_name(m, default)} | " + " | ".join(cells) + " |")
    for d in datasets.values():
        queries = (f"every one of the {d['queries']:,} images querying the others" if d.get("leave_one_out")
                   else f"{d['index_images']:,} indexed train images, {d['queries']:,} test queries")
        lines += ["", f"### {d['title']}: {queries} ({d['image_shape']})", "",
                  f"| Method | P@{K} L2 | P@{K} cosine | P@{K} + check | mAP@{MAP_K} L2 | mAP@{MAP_K} cosine | "
                  "Training s | Steps | Train images/s | Encode 1 image ms | Encode images/s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for m, r in d["methods"].items():
            ret, t, e = r["retrieval"], r["training"] or {}, r.get("encoding") or {}
            checked = ret.get("checked", {}).get(f"precision_at_{K}")
            lines.append(f"| {_name(m, default)} | {ret['l2'][f'precision_at_{K}']:.3f} | "
                         f"{ret['cosine'][f'precision_at_{K}']:.3f} | "
                         f"{'' if checked is None else f'{checked:.3f}'} | {ret['l2'][f'map_at_{MAP_K}']:.3f} | "
                         f"{ret['cosine'][f'map_at_{MAP_K}']:.3f} | {t.get('seconds', '')} | "
                         f"{t.get('steps_run', '')} | {t.get('images_per_second', '')} | "
                         f"{e.get('single_ms', '')} | {e.get('batch_images_per_s', '')} |")
        lines += ["", f"Robustness on {d['title']}: recall@1 of the clean original among the {d['queries']:,} clean "
                  "images, query = an edited copy (L2, Hamming for the hashes; ties shared; last column the mean "
                  "with cosine)", "",
                  "| Method | " + " | ".join(CORRUPTION_TITLES[c] for c in CORRUPTION_TITLES)
                  + " | mean | mean cosine |",
                  "|---|" + "---:|" * (len(CORRUPTION_TITLES) + 2)]
        for m, r in d["methods"].items():
            rob = r["robustness"]
            lines.append(f"| {_name(m, default)} | " + " | ".join(f"{rob['l2'][c]:.3f}" for c in CORRUPTION_TITLES)
                         + f" | {rob['l2']['mean']:.3f} | {rob['cosine']['mean']:.3f} |")
            if "checked" in rob:
                lines.append(f"| {_name(m, default)} + copy check | "
                             + " | ".join(f"{rob['checked'][c]:.3f}" for c in CORRUPTION_TITLES)
                             + f" | {rob['checked']['mean']:.3f} | |")
    recon = [d for d in datasets.values() if any("reconstruction_sse" in r for r in d["methods"].values())]
    if recon:
        lines += ["", "### Reconstruction error: squared error summed over each test image's pixels ([0, 1] units), "
                  "mean over the test set", "",
                  "| Method | " + " | ".join(f"{d['title']} ({d['image_shape']})" for d in recon) + " |",
                  "|---|" + "---:|" * len(recon)]
        for m in methods:
            cells = [f"{d['methods'][m]['reconstruction_sse']:.2f}"
                     if "reconstruction_sse" in d["methods"].get(m, {}) else "" for d in recon]
            if any(cells):
                lines.append(f"| {_name(m, default)} | " + " | ".join(cells) + " |")
        lines += ["", "Hinton & Salakhutdinov (2006), MNIST, 30-number codes: deep autoencoder 3.00, PCA 13.87."]
    lines += _loss_terms(results)
    failed = [f"{d['title']} {v} ({why})" for d in datasets.values() for v, why in d.get("failed", {}).items()]
    if failed:
        lines += ["", "Failed: " + "; ".join(failed) + "."]
    if results.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"


def _loss_terms(results: dict) -> list[str]:
    """The default's final loss terms per dataset: every term of the training loss, separately."""
    default = results["settings"]["default_variant"]
    rows = []
    for d in results["datasets"].values():
        t = (d["methods"].get(default) or {}).get("training") or {}
        history = t.get("history") or {}
        if history:
            terms = ", ".join(f"{k} {v[-1]:.4f}" for k, v in history.items() if v)
            rows.append(f"| {d['title']} | {terms} | {t.get('mean_image_loss') or 0:.4f} |")
    if not rows:
        return []
    return ["", "### The default's loss terms at the end of training (weighted; history in quality.json)", "",
            "| Data set | Terms | Held-out loss of the mean image |", "|---|---|---:|", *rows]


def chart(results: dict, path: Path) -> None:
    """Grouped bars: precision@10 (L2) of each method on each dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results["datasets"].values())
    methods = list(dict.fromkeys(m for d in datasets for m in d["methods"]))
    width = 0.8 / len(methods)
    colours = ["#999999", "#555555", "#bbbb77", "#888844"] + [plt.cm.tab10(i) for i in range(len(methods))]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 + len(datasets) * len(methods) * 0.42), 4.5), dpi=100)
    for j, m in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, d in enumerate(datasets) if m in d["methods"]]
        ys = [d["methods"][m]["retrieval"]["l2"][f"precision_at_{K}"] for d in datasets if m in d["methods"]]
        bars = ax.bar(xs, ys, width * 0.95, label=_name(m, results["settings"]["default_variant"]),
                      color=colours[j % len(colours)])
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(datasets)), [d["title"] for d in datasets])
    ax.set_ylabel(f"precision@{K} (L2)")
    ax.set_ylim(0, 1.12)
    limit = results["settings"]["limit"]
    ax.set_title("Neighbours sharing the query's label, 30-number codes"
                 + (f"\n(quick run: at most {limit:,} images per split)" if limit else ""), fontsize=10)
    ax.legend(fontsize=8, ncol=min(5, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.08),
              frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    """quality.json, quality.md and quality.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(results))
    chart(results, out / "quality.png")
