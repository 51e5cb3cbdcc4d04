"""ACDC: the MICCAI 2017 cardiac challenge (2D cine-MRI slices; RV, myocardium, LV; protocol sections 1-3).

Preprocessed layout: ``slices/<vol>_slice_K.h5`` (the training items: one 2D slice H x W of a
train.list volume, K 1-based) and ``volumes/<vol>.h5`` (every listed volume, Z x H x W: evaluation
and validation). Volume names are ``patientNNN_frame01`` (ED) / ``_frame02`` (ES); a scan is a patient.
"""

from __future__ import annotations

from pathlib import Path

from ssnet.datasets.base import Dataset, register_dataset

_SIZE = {"type": "integer", "minimum": 1}
_INT_OR_RANGE = {"oneOf": [_SIZE, {"type": "array", "items": _SIZE, "minItems": 2, "maxItems": 2}]}
_FRACTION = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}


@register_dataset
class ACDC(Dataset):
    name = "ACDC"
    dim = 2
    class_names = ("RV", "Myo", "LV")
    class_descriptions = ("right ventricle", "myocardium", "left ventricle")
    architectures = ("unet",)
    scan_unit = "patients"
    paper_full_labelled = 70
    split_files = {"required": ("train", "val", "test"), "optional": ("train_slices",)}
    qualitative_axis = 0  # volumes are (Z, H, W)
    release_hints = {
        "raw": "the folder that contains 'training/patientNNN/' with Info.cfg and the ED/ES frames "
               "(ACDC challenge training set)",
        "preprocessed": "the folder that contains 'data/patientNNN_frame0F.h5' and 'data/slices/' "
                        "(the shared preprocessed ACDC release)",
    }
    release_globs = {  # how each kind is recognised in a folder (the first wildcard part is the ID)
        "raw": ("training/patient*/Info.cfg", "patient*/Info.cfg"),
        "preprocessed": ("data/patient*_frame0?.h5", "data/slices/patient*_slice_*.h5", "patient*_frame0?.h5",
                         "slices/patient*_slice_*.h5"),
    }
    released_selection = "best_val"  # the reference ACDC code selects on val.list (protocol section 8)
    preprocessing_params = {
        "check_intensity": {"type": "boolean", "default": True,
                            "description": "source preprocessed: stop when an image has values outside [0, 1]; "
                                           "false accepts any intensities"},
    }
    synthetic_params = {
        "n_patients": {**_SIZE, "maximum": 999, "default": 10,
                       "description": "patients generated (two volumes each: ED and ES)"},
        "n_slices": {**_INT_OR_RANGE, "default": [4, 8],
                     "description": "slices per patient: a number or an inclusive [low, high] range drawn per patient"},
        "size_hw": {**_INT_OR_RANGE, "default": [48, 80],
                    "description": "in-plane H and W: a number or an inclusive [low, high] range (H, W drawn apart)"},
        "val_fraction": {**_FRACTION, "default": 0.1, "description": "share of the patients in val.list"},
        "test_fraction": {**_FRACTION, "default": 0.2, "description": "share of the patients in test.list"},
    }

    # ------------------------------------------------------------------------------ splits
    def scan_count(self, names) -> int:
        """Patients of volume or slice names."""
        from ssnet.data.splits import patients_of

        return len(patients_of(names))

    def training_items(self, splits, labelled, selection):
        """The slices of the first ``labelled`` patients of train.list (``all``: every patient), the
        other training slices unlabelled; val.list validates."""
        from ssnet.config import FULL
        from ssnet.data.splits import labelled_slices_acdc, patients_of

        train, slices = splits["train"], splits["train_slices"]
        n_patients = len(patients_of(train)) if labelled == FULL else int(labelled)
        chosen = labelled_slices_acdc(slices, train, n_patients)
        taken = set(chosen)
        return chosen, [s for s in slices if s not in taken], splits["val"]

    def case_path(self, root, name) -> Path:
        return Path(root) / "volumes" / f"{name}.h5"

    def item_path(self, root, name) -> Path:
        return Path(root) / "slices" / f"{name}.h5"

    # ---------------------------------------------------------------------------- training
    def augment(self, image, label, rng, patch, pad_extra):
        """p=0.5 rot90 + flip, else p=0.5 rotation in [-20, 20); then zoom to ``patch`` (no padding)."""
        from ssnet.data.augment import augment_acdc

        return augment_acdc(image, label, rng, patch)

    def predict_volume(self, network, image, inference, device):
        """Slice-by-slice prediction of a (Z, H, W) volume at ``inference.patch_size`` (protocol section 9)."""
        from ssnet.evaluation.inference import predict_volume_2d

        return predict_volume_2d(network, image, size=inference["patch_size"], batch_size=inference["batch_size"],
                                 device=device)

    # ----------------------------------------------------------------------- preprocessing
    def check_inputs(self, raw_dir, splits, params, source):
        """Every listed volume (and training slice of a release) readable and consistent; derives
        ``train_slices`` from the volume depths when the list is absent. No warnings. When no listed
        input is there, one error says what ``raw_dir`` holds instead (another layout)."""
        from ssnet.data.checks import require_layout
        from ssnet.data.splits import acdc_volumes, patients_of

        volumes = acdc_volumes(splits)
        if source == "preprocessed":
            from ssnet.data.release import acdc_release_root, acdc_slice_path, acdc_volume_path, validate_acdc_release

            root = acdc_release_root(raw_dir)
            slices = splits.get("train_slices") or [f"{v}_slice_1" for v in splits["train"]]
            require_layout(self.name, source, raw_dir, [acdc_volume_path(root, v) for v in volumes]
                           + [acdc_slice_path(root, s) for s in slices], "volume", len(volumes))
            validate_acdc_release(root, splits, self.intensity_switch(params))
        else:
            from ssnet.data.preprocess import acdc_root, validate_acdc

            root = acdc_root(raw_dir)
            require_layout(self.name, source, raw_dir, [root / p / "Info.cfg" for p in patients_of(volumes)],
                           "patient")
            validate_acdc(root, splits)
        return []

    def write_outputs(self, raw_dir, splits, params, source, out, manifest):
        """``volumes/`` and ``slices/``; returns ``{"volumes": n, "slices": n}``."""
        if source == "preprocessed":
            from ssnet.data.release import acdc_release_root, write_acdc_release

            return write_acdc_release(acdc_release_root(raw_dir), splits, out, manifest)
        from ssnet.data.preprocess import acdc_root, write_acdc

        return write_acdc(acdc_root(raw_dir), splits, out, manifest)

    # --------------------------------------------------------------------------- synthetic
    def make_synthetic(self, raw_dir, seed, params):
        from ssnet.data.synthetic import make_synthetic_acdc

        return make_synthetic_acdc(raw_dir, n_patients=params["n_patients"], seed=seed,
                                   n_slices=params["n_slices"], size_hw=params["size_hw"])

    def synthetic_splits(self, raw_dir, seed, params):
        """Patients in a seeded order: val, test (sorted), then train (in that order, like the official
        list); ``_frame01`` then ``_frame02`` per patient; ``train_slices`` from the image headers."""
        from ssnet.data.synthetic import acdc_synthetic_splits

        return acdc_synthetic_splits(raw_dir, seed, self.synthetic_split_sizes(params))

    def synthetic_split_sizes(self, params):
        from ssnet.data.splits import split_counts

        return split_counts(params["n_patients"], params["val_fraction"], params["test_fraction"], "patients",
                            f"datasets.{self.name}.synthetic")

    def make_fixture(self, kind, out_dir, splits_dir, seed):
        from ssnet.data.fixtures import make_acdc_layout

        return make_acdc_layout(out_dir, kind, splits_dir, seed)
