"""Both street-view fixtures at once (``semimtl-geo synthesize-streetview``).

:func:`write_streetview_fixtures` writes a tiny Cityscapes
(:mod:`semimtl_geo.data.cityscapes.fixtures`) and Synscapes
(:mod:`semimtl_geo.data.synscapes.fixtures`) tree, each complete or not at all.
"""

from pathlib import Path

from semimtl_geo.atomic import atomic_dir
from semimtl_geo.data.cityscapes.fixtures import write_cityscapes_fixture
from semimtl_geo.data.synscapes.fixtures import write_synscapes_fixture


def write_streetview_fixtures(
    out_dir: str | Path,
    size: tuple[int, int] = (64, 128),
    frames_per_city: int = 2,
    synscapes_frames: int = 25,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``out_dir/cityscapes`` and ``out_dir/synscapes``, each complete or not at all.

    Each tree is written in a temporary folder beside its final place and renamed into
    it, so an interrupted run leaves no half-written dataset.

    Returns:
        ``{"cityscapes": path, "synscapes": path}``.

    """
    from semimtl_geo.errors import UserError
    from semimtl_geo.outputs import check_output_dir

    out_dir = check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {"cityscapes": out_dir / "cityscapes", "synscapes": out_dir / "synscapes"}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(
            f"{', '.join(existing)} already exist; pass --overwrite or pick another -o."
        )
    for name, final in targets.items():
        with atomic_dir(final) as tmp:
            if name == "cityscapes":
                write_cityscapes_fixture(tmp, size, frames_per_city, seed)
            else:
                write_synscapes_fixture(tmp, size, synscapes_frames, seed + 1)
    return targets
