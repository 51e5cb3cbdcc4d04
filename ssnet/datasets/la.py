"""LA: the 2018 Atrial Segmentation Challenge (3D LGE-MRI, left-atrium cavity; protocol sections 1-3).

Preprocessed layout: ``cases/<ID>.h5`` (image float32 (X, Y, Z), label uint8 {0, 1}) for every case
of every list, plus ``crop_boxes.csv``. An item and a volume are both a case; a scan is a case.
"""

from __future__ import annotations

from pathlib import Path

from ssnet.datasets.base import Dataset, register_dataset

_SIZE = {"type": "integer", "minimum": 1}
_PAIR = {"type": "array", "items": _SIZE, "minItems": 2, "maxItems": 2}
_FRACTION = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}


def _case_ids(splits) -> list[str]:
    """Every case of the lists, train then val then test (val.list is optional)."""
    return [c for name in ("train", "val", "test") for c in splits.get(name, [])]


def _origin(splits) -> dict[str, str]:
    """Case -> the split list file it is listed in (for messages)."""
    return {c: f"{name}.list" for name in ("test", "val", "train") for c in splits.get(name, [])}


@register_dataset
class LA(Dataset):
    name = "LA"
    dim = 3
    class_names = ("LA",)
    class_descriptions = ("left atrium cavity",)
    architectures = ("vnet",)
    scan_unit = "scans"
    paper_full_labelled = 80
    split_files = {"required": ("train", "test"), "optional": ("val",)}
    qualitative_axis = 2  # volumes are (X, Y, Z): axial slices along the last axis
    release_hints = {
        "raw": "the folder that contains 'Training Set/<case ID>/lgemri.nrrd' and 'laendo.nrrd' "
               "(2018 Atrial Segmentation Challenge)",
        "preprocessed": "the folder that contains '2018LA_Seg_Training Set/<case ID>/mri_norm2.h5' "
                        "(the shared preprocessed LA release)",
    }
    release_globs = {  # how each kind is recognised in a folder (the first wildcard part is the case ID)
        "raw": ("Training Set/*/lgemri.nrrd", "*/lgemri.nrrd"),
        "preprocessed": ("2018LA_Seg_Training Set/*/mri_norm2.h5", "*/mri_norm2.h5"),
    }
    released_selection = "best_test"  # the reference LA code selects on the test list (protocol section 8)
    preprocessing_params = {
        "seed": {**_SIZE, "minimum": 0, "default": 1337,
                 "description": "seeds the crop margins (unseeded in the reference)"},
        "margin_low": {**_SIZE, "minimum": 0, "default": 10,
                       "description": "crop margins per side are drawn from [margin_low, margin_high) voxels"},
        "margin_high": {**_SIZE, "default": 20, "description": "exclusive upper bound of the crop margins"},
        "min_extent": {**_SIZE, "default": 112,
                       "description": "x/y crop boxes narrower than this are widened to it (the patch size)"},
        "check_intensity": {"type": "boolean", "default": True,
                            "description": "source preprocessed: stop when an image does not look z-scored "
                                           "(|mean| <= 3, std in [0.25, 5]); false accepts any intensities"},
    }
    synthetic_params = {
        "n_cases": {**_SIZE, "default": 10, "description": "cases generated (split into train.list and test.list)"},
        "size_xy": {"oneOf": [_PAIR, {"type": "array", "items": _PAIR, "minItems": 1}], "default": [64, 64],
                    "description": "(X, Y) of every case, or a list of (X, Y) pairs drawn from per case"},
        "n_slices": {**_SIZE, "minimum": 4, "default": 24, "description": "slices along z of every case"},
        "test_fraction": {**_FRACTION, "default": 0.2, "description": "share of the cases in test.list"},
    }

    # ------------------------------------------------------------------------------ splits
    def scan_count(self, names) -> int:
        """Cases: one entry is one scan."""
        return len(names)

    def training_items(self, splits, labelled, selection):
        """The first ``labelled`` cases of train.list (``all``: every one), the others unlabelled.

        ``best_val``: the last ``validation_cases`` of train.list validate and leave the pool.
        """
        from ssnet.config import FULL
        from ssnet.data.splits import labelled_cases_la

        train = splits["train"]
        n_val = int(selection["validation_cases"]) if selection["mode"] == "best_val" else 0
        pool, validation = train[: len(train) - n_val], train[len(train) - n_val:]
        chosen = list(pool) if labelled == FULL else labelled_cases_la(pool, int(labelled))
        taken = set(chosen)
        return chosen, [c for c in pool if c not in taken], validation

    def case_path(self, root, name) -> Path:
        return Path(root) / "cases" / f"{name}.h5"

    def item_path(self, root, name) -> Path:
        return self.case_path(root, name)

    # ---------------------------------------------------------------------------- training
    def augment(self, image, label, rng, patch, pad_extra):
        """Random rot90 + flip, then a random crop of ``patch`` (x, y, z), zero-padded if needed."""
        from ssnet.data.augment import augment_la

        return augment_la(image, label, rng, patch, pad_extra)

    def predict_volume(self, network, image, inference, device):
        """Sliding-window prediction of an (X, Y, Z) volume (protocol section 9)."""
        from ssnet.evaluation.inference import sliding_window_predict

        prediction, _ = sliding_window_predict(
            network, image, patch=inference["patch_size"], stride_xy=inference["stride_xy"],
            stride_z=inference["stride_z"], n_classes=self.n_classes, batch_size=inference["batch_size"],
            device=device)
        return prediction

    # ----------------------------------------------------------------------- preprocessing
    def check_inputs(self, raw_dir, splits, params, source):
        """Every listed case readable and consistent; warns on a depth other than 88 (not for synthetic).

        When no listed case is there, one error says what ``raw_dir`` holds instead (another layout).
        """
        from ssnet.data.checks import require_layout

        ids = _case_ids(splits)
        if source == "preprocessed":
            from ssnet.data.release import la_release_path, la_release_root, validate_la_release

            root = la_release_root(raw_dir)
            require_layout(self.name, source, raw_dir, [la_release_path(root, c) for c in ids])
            return validate_la_release(root, ids, self.intensity_switch(params), _origin(splits))
        from ssnet.data.preprocess import la_root, validate_la

        root = la_root(raw_dir)
        require_layout(self.name, source, raw_dir, [root / c / "lgemri.nrrd" for c in ids])
        return validate_la(root, ids, warn_depth=source == "raw", origin=_origin(splits))

    def write_outputs(self, raw_dir, splits, params, source, out, manifest):
        """``cases/<ID>.h5`` (+ ``crop_boxes.csv`` from raw archives); returns ``{"cases": n}``."""
        if source == "preprocessed":
            from ssnet.data.release import la_release_root, write_la_release

            return {"cases": write_la_release(la_release_root(raw_dir), _case_ids(splits), out, manifest)}
        from ssnet.data.preprocess import la_root, write_la

        rows = write_la(la_root(raw_dir), _case_ids(splits), out, params["seed"], params["margin_low"],
                        params["margin_high"], params["min_extent"], manifest=manifest)
        return {"cases": len(rows)}

    # --------------------------------------------------------------------------- synthetic
    def make_synthetic(self, raw_dir, seed, params):
        from ssnet.data.synthetic import make_synthetic_la

        return make_synthetic_la(raw_dir, n_cases=params["n_cases"], size_xy=params["size_xy"],
                                 n_slices=params["n_slices"], seed=seed)

    def synthetic_splits(self, raw_dir, seed, params):
        """``train.list`` and ``test.list``, both sorted."""
        from ssnet.data.synthetic import la_synthetic_splits

        return la_synthetic_splits(raw_dir, seed, self.synthetic_split_sizes(params))

    def synthetic_split_sizes(self, params):
        from ssnet.data.splits import split_counts

        return split_counts(params["n_cases"], 0.0, params["test_fraction"], "cases",
                            f"datasets.{self.name}.synthetic")

    def make_fixture(self, kind, out_dir, splits_dir, seed):
        from ssnet.data.fixtures import make_la_layout

        return make_la_layout(out_dir, kind, splits_dir, seed)
