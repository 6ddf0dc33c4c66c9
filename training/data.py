"""SQuAD features for training and evaluation: windows with start/end labels, length-bucketed
batches with dynamic padding, and F1/EM of a model on a set of examples."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from qualam_rt import decode, featurize, squad


def load_tokenizer(path: str | Path) -> Tokenizer:
    """tokenizer.json of a checkpoint directory (or the file itself)."""
    path = Path(path)
    return Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))


def split_articles(path: str | Path, held_out: int) -> tuple[list[squad.Example], list[squad.Example]]:
    """(train, held-out) examples of a SQuAD training file: the last `held_out` articles are
    kept apart for the length search and calibration (the dev set is only for the final report).
    held_out=0 holds nothing out (every article trains; the held-out list is empty)."""
    if not isinstance(held_out, int) or held_out < 0:
        raise ValueError(f"held_out_articles must be an integer >= 0, got {held_out!r}")
    if held_out == 0:
        return squad.load_examples(path, slice(None)), []
    return squad.load_examples(path, slice(None, -held_out)), squad.load_examples(path, slice(-held_out, None))


class Features:
    """Windows of a list of examples, with the token span of the first answer as label
    ((0, 0), the [CLS] token, when the answer is not inside a window)."""

    def __init__(self, tokenizer, examples, max_seq_len=featurize.MAX_SEQ_LEN, doc_stride=featurize.DOC_STRIDE,
                 max_query_len=featurize.MAX_QUERY_LEN):
        self.examples = examples
        self.windows = featurize.make_windows(tokenizer, [(e.question, e.context) for e in examples],
                                          max_seq_len, doc_stride, max_query_len)
        labels = []
        for w in self.windows:
            ex = examples[w.example]
            span = None
            if ex.answers:
                start = ex.answer_starts[0]
                span = featurize.answer_token_span(w, start, start + len(ex.answers[0]))
            labels.append(span or (0, 0))
        self.labels = np.array(labels, dtype=np.int64).reshape(-1, 2)
        self.lengths = np.array([len(w.input_ids) for w in self.windows])

    def __len__(self):
        return len(self.windows)

    def keep_windows(self, keep: np.ndarray) -> None:
        """Keep only the windows where `keep` (a bool per window) is set."""
        chosen = np.flatnonzero(keep)
        self.windows = [self.windows[i] for i in chosen]
        self.labels, self.lengths = self.labels[chosen], self.lengths[chosen]

    def batches(self, batch_size: int, shuffle: bool, rng: np.random.Generator | None = None,
                bucket: int = 64):
        """Index lists of batches of windows of similar length (less padding). With shuffle,
        windows are shuffled, sorted by length inside chunks of bucket*batch_size, and the
        batches are shuffled."""
        idx = np.arange(len(self))
        if shuffle:
            idx = rng.permutation(idx)
            chunk = bucket * batch_size
            idx = np.concatenate([c[np.argsort(self.lengths[c], kind="stable")] for c in np.array_split(idx, max(1, len(idx) // chunk))]) if len(idx) else idx
        else:
            idx = idx[np.argsort(self.lengths, kind="stable")]
        out = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
        if shuffle:
            out = [out[i] for i in rng.permutation(len(out))]
        return out

    def collate(self, index) -> dict[str, torch.Tensor]:
        L = int(self.lengths[index].max())
        ids = torch.zeros(len(index), L, dtype=torch.long)
        types = torch.zeros(len(index), L, dtype=torch.long)
        mask = torch.zeros(len(index), L, dtype=torch.bool)
        for row, i in enumerate(index):
            w = self.windows[i]
            n = len(w.input_ids)
            ids[row, :n] = torch.from_numpy(w.input_ids.astype(np.int64))
            types[row, :n] = torch.from_numpy(w.token_type_ids.astype(np.int64))
            mask[row, :n] = True
        labels = torch.from_numpy(self.labels[index])
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                "start": labels[:, 0], "end": labels[:, 1]}


def torch_infer(model, length_config=None):
    """infer(windows) -> [n, 2] logits per window, for decode.predict, with a BertQA model."""
    device = next(model.parameters()).device

    def infer(windows):
        L = max(len(w.input_ids) for w in windows)
        ids = torch.zeros(len(windows), L, dtype=torch.long)
        types = torch.zeros_like(ids)
        mask = torch.zeros(len(windows), L, dtype=torch.bool)
        for i, w in enumerate(windows):
            n = len(w.input_ids)
            ids[i, :n] = torch.from_numpy(w.input_ids.astype(np.int64))
            types[i, :n] = torch.from_numpy(w.token_type_ids.astype(np.int64))
            mask[i, :n] = True
        with torch.inference_mode():
            s, e = model(ids.to(device), types.to(device), mask.to(device), length_config)
        s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
        return [np.stack([s[i, :len(w.input_ids)], e[i, :len(w.input_ids)]], 1) for i, w in enumerate(windows)]
    return infer


def evaluate_model(model, features: Features, length_config=None, batch_size: int = 64, desc="eval") -> dict:
    """EM/F1 of a BertQA model on the examples of `features`."""
    model.eval()
    preds = decode.predict(features.examples, features.windows, torch_infer(model, length_config), batch_size, desc)
    return squad.evaluate(features.examples, preds)
