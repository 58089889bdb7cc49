"""Records, the privacy unit: which rows of a batch belong to the same original training record.

Differential privacy protects *records*. A record can yield several rows (two-sided counterfactual data
augmentation keeps a record and its gender-swapped copy, both carrying the record's ``record_id``). Their
gradients must be summed before clipping — one clipped gradient per record — or a record's influence would
be bounded by ``k·C`` instead of ``C`` and the reported ε would be wrong.

:class:`RecordLayout` maps the rows of a micro-batch onto the records they come from and offers the two
operations the per-record clipping needs: summing per-row quantities per record, and concatenating a
record's rows along the token axis (the ghost-norm identity then sees one long sequence per record).
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class RecordLayout:
    """Rows → records of one micro-batch.

    Args:
        record_ids: ``[B]`` ids of the record each row comes from (``None``: every row is its own record).
        batch_size: number of rows ``B`` (needed when ``record_ids`` is ``None``).
    """

    def __init__(self, record_ids: torch.Tensor | None, batch_size: int | None = None):
        if record_ids is None:
            if batch_size is None:
                raise ValueError("RecordLayout needs record_ids or batch_size.")
            self.num_rows = batch_size
            self.row_to_record = torch.arange(batch_size)
            self.gather_index = self.row_to_record[:, None]
        else:
            ids = record_ids.detach().cpu().reshape(-1).tolist()
            self.num_rows = len(ids)
            groups: OrderedDict[int, list[int]] = OrderedDict()
            for row, rid in enumerate(ids):
                groups.setdefault(int(rid), []).append(row)
            width = max((len(rows) for rows in groups.values()), default=1)
            # pad with the index of an extra all-zero row (num_rows)
            self.gather_index = torch.tensor([rows + [self.num_rows] * (width - len(rows)) for rows in groups.values()],
                                             dtype=torch.long).reshape(len(groups), width)
            row_to_record = torch.empty(self.num_rows, dtype=torch.long)
            for r, rows in enumerate(groups.values()):
                row_to_record[rows] = r
            self.row_to_record = row_to_record
        self.num_records = self.gather_index.shape[0]
        self.rows_per_record = self.gather_index.shape[1]
        self.is_identity = self.rows_per_record == 1 and bool(
            torch.equal(self.gather_index[:, 0], torch.arange(self.num_rows)))
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (self.gather_index.to(device), self.row_to_record.to(device))
        return self._device_cache[device]

    def sum_rows(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` per-row values → ``[R, ...]`` per-record sums."""
        if self.is_identity:
            return x
        _, row_to_record = self._on(x.device)
        out = x.new_zeros((self.num_records, *x.shape[1:]))
        return out.index_add_(0, row_to_record, x)

    def concat_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, d]`` → ``[R, k·T, d]``: each record's rows one after the other (zero rows pad)."""
        if self.is_identity:
            return x
        gather_index, _ = self._on(x.device)
        padded = torch.cat([x, x.new_zeros((1, *x.shape[1:]))], dim=0)
        out = padded[gather_index]  # [R, k, T, d]
        return out.reshape(self.num_records, -1, x.shape[-1])

    def per_row(self, per_record: torch.Tensor) -> torch.Tensor:
        """``[R]`` per-record values → ``[B]`` (each row gets its record's value)."""
        if self.is_identity:
            return per_record
        _, row_to_record = self._on(per_record.device)
        return per_record[row_to_record]


def record_rows(record_ids: list[int] | None, num_rows: int) -> list[list[int]]:
    """Row indices of each record of a dataset, in order of first appearance (every row its own record
    when the dataset has no ``record_id`` column)."""
    if record_ids is None:
        return [[i] for i in range(num_rows)]
    groups: OrderedDict[int, list[int]] = OrderedDict()
    for row, rid in enumerate(record_ids):
        groups.setdefault(int(rid), []).append(row)
    return list(groups.values())
