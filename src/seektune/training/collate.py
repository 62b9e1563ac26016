"""Batches: right padding to the longest sample; padding never carries a loss."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from seektune.data.render import IGNORE, Encoded


class SampleDataset(Dataset):
    def __init__(self, samples: list[Encoded]):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        item = {"input_ids": s.input_ids, "labels": s.labels}
        if getattr(s, "images", None):
            item["images"] = s.images  # loaded by models.vl.VLCollator
        return item


class PadCollator:
    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids, labels, mask = [], [], []
        for f in features:
            pad = width - len(f["input_ids"])
            ids.append(f["input_ids"] + [self.pad_token_id] * pad)
            labels.append(f["labels"] + [IGNORE] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }
