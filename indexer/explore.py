"""`indexer duplicates`, `indexer outliers` and `indexer map`: views of a whole collection, from the command line."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from indexer.collection import Collection
from indexer.duplicates import CHECKS, DEFAULT_CHECK, MATCH_THRESHOLD, parse_threshold
from indexer.neighbours import percentile
from indexer.projection import CollectionMap

LEGEND_GROUPS = 12  # folders named in the map's legend; the rest are drawn grey as "other folders"


def add_parsers(sub: Any, common: argparse.ArgumentParser, index_arg, argument_type, whole_number) -> None:
    """The three sub-commands' parsers, under `indexer`'s sub-parsers."""
    dups = sub.add_parser("duplicates", parents=[common],
                          help="groups of near-identical images (edited copies, re-encodes, resizes), largest first")
    index_arg(dups)
    dups.add_argument("--threshold", type=argument_type(parse_threshold, "threshold"), default=None, metavar="auto|D",
                      help="code distance within which two images may be duplicates (auto: suggested from how far "
                           "edited copies of the collection's own images stray)")
    dups.add_argument("--check", choices=CHECKS, default=DEFAULT_CHECK,
                      help="pixels: confirm each pair by comparing the images' aligned pixels (edited copies only); "
                           "none: group by code distance alone (look-alikes too) (pixels)")
    dups.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    outliers = sub.add_parser("outliers", parents=[common],
                              help="the images the model understands least (largest reconstruction error)")
    index_arg(outliers)
    outliers.add_argument("-n", type=argument_type(whole_number(1), "n"), default=50, help="how many (50)")
    outliers.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    drawn = sub.add_parser("map", parents=[common], help="a 2-D map of every image's code, as a PNG picture")
    index_arg(drawn)
    drawn.add_argument("--png", type=str, required=True, metavar="FILE", help="where to write the picture")
    drawn.add_argument("--method", choices=("pca", "umap"), default="pca",
                       help="projection: pca, or umap with the optional extra installed (pca)")


def duplicates_report(collection: Collection, threshold: float | None, limit: int | None = None,
                      check: str = DEFAULT_CHECK) -> dict[str, Any]:
    """Near-duplicate groups as the CLI and the API give them: threshold used (also as a percentile), suggestion,
    how pairs were confirmed, totals, and the first `limit` groups (all with None), largest first."""
    import numpy as np

    found = collection.duplicates(threshold, check)
    check = found.check  # as parsed
    listed = found.groups if limit is None else found.groups[:limit]
    paths = collection.relpaths(i for g in listed for i, _ in g.members)
    scale = np.asarray(collection.calibration.get("nn_quantiles", []), np.float64)
    checked = {"match_threshold": MATCH_THRESHOLD, "pairs_checked": found.pairs_checked,
               "unreadable": found.unreadable} if check == "pixels" else {}

    def member(image_id: int, distance: float, group) -> dict[str, Any]:
        fields = {"id": image_id, "path": paths.get(image_id, ""), "distance": round(distance, 6)}
        if check == "pixels":
            fields["match"] = round(group.matches.get(image_id, 1.0), 4)
        return fields

    return {"threshold": round(found.threshold, 6),
            "threshold_percentile": round(float(percentile(found.threshold, scale)), 2),
            "suggested_threshold": round(found.suggested, 6), "check": check, **checked,
            "groups_total": len(found.groups), "images_in_groups": sum(len(g.members) for g in found.groups),
            "groups": [{"members": [member(i, d, g) for i, d in g.members]} for g in listed]}


def outliers_report(collection: Collection, n: int) -> dict[str, Any]:
    """The `n` images rebuilt worst as the CLI and the API give them, with how many images have an error."""
    found, measured = collection.outliers(n)
    return {"measured": measured, "images": len(collection), "results": [
        {"id": o.id, "path": o.path, "reconstruction_error": round(o.error, 6), "error_percentile": o.percentile}
        for o in found]}


def _report(index, make: Callable[[Collection], Any]) -> Any:
    """`make(collection)` on the collection at `index`, opened for it and closed after."""
    collection = Collection.open(index)
    try:
        return make(collection)
    finally:
        collection.close()


def cmd_duplicates(args: argparse.Namespace) -> int:
    report = _report(args.index, lambda c: duplicates_report(c, args.threshold, check=args.check))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    groups = "group" if report["groups_total"] == 1 else "groups"
    print(f"{report['groups_total']} {groups} of near-duplicates ({report['images_in_groups']} images) at distance "
          f"{report['threshold']:.4g} (closer than {report['threshold_percentile']:g}% of nearest-neighbour pairs; "
          f"suggested {report['suggested_threshold']:.4g})")
    if args.check == "pixels":
        unreadable = f"; {report['unreadable']} files could not be read" if report["unreadable"] else ""
        print(f"{report['pairs_checked']} candidate pairs compared pixel by pixel; a copy matches at "
              f"{report['match_threshold']:g} or more{unreadable}")
    else:
        print("grouped by code distance alone (no pixel check): look-alikes as well as copies")
    for number, group in enumerate(report["groups"], 1):
        print(f"\ngroup {number}: {len(group['members'])} images")
        print(f"  {'distance':>10}  {'match':>6}  path" if args.check == "pixels" else f"  {'distance':>10}  path")
        for m in group["members"]:
            match = f"{m['match']:6.3f}  " if args.check == "pixels" else ""
            print(f"  {m['distance']:10.4f}  {match}{m['path']}")
    return 0


def cmd_outliers(args: argparse.Namespace) -> int:
    report = _report(args.index, lambda c: outliers_report(c, args.n))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    measured, images = report["measured"], report["images"]
    note = "" if measured >= images else (f" ({images - measured} images indexed by an older version have no error: "
                                          "`indexer build --retrain` measures them)")
    print(f"the {len(report['results'])} images rebuilt worst of {measured} measured{note}")
    print(f"  {'error':>10}  {'pctl':>6}  path")
    for r in report["results"]:
        print(f"  {r['reconstruction_error']:10.5f}  {r['error_percentile']:6.2f}  {r['path']}")
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    points = _report(args.index, lambda c: c.map(args.method))
    save_map_png(points, args.png, title=f"{os.path.basename(os.path.abspath(args.index))}: {len(points.ids):,} "
                                        f"images ({points.method.upper()} of the codes)")
    print(f"wrote {args.png}: {len(points.ids)} images in {len(points.groups)} folders ({points.method})",
          file=sys.stderr)
    return 0


def save_map_png(points: CollectionMap, path: str | os.PathLike, title: str = "") -> None:
    """Draw the map to a PNG: one dot per image, coloured by top-level folder (the largest ones named)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 8), dpi=120)
    size = float(np.clip(4000 / max(len(points.ids), 1), 0.5, 30))  # dots shrink as the collection grows
    colours = plt.get_cmap("tab20")
    shown = min(len(points.groups), LEGEND_GROUPS)
    rest = points.group >= shown
    if rest.any():
        ax.scatter(points.xy[rest, 0], points.xy[rest, 1], s=size, c="#bbbbbb", linewidths=0,
                   label=f"{len(points.groups) - shown} other folders")
    for g in range(shown):
        mine = points.group == g
        ax.scatter(points.xy[mine, 0], points.xy[mine, 1], s=size, color=colours(g % 20), linewidths=0,
                   label=points.groups[g] or "(top level)")
    if len(points.groups) > 1:
        ax.legend(fontsize=7, markerscale=max(1.0, 12 / size), loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
