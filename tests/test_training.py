"""The training pipeline on tiny random models and a tiny SQuAD-format sample."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qualam_rt import Engine
from qualam_rt import reference as ref
from qualam_rt import synthetic as syn
from qualam_rt.model_file import engine_tensors, read_model
from training.data import Features, load_tokenizer
from training.export import engine_tensors_of, export_qrt
from training.model import BertConfig, BertQA, load_hf_checkpoint
from training.train import TrainConfig, load_model, save_model, train

TINY = BertConfig(hidden=32, heads=4, intermediate=64, layers=3, vocab_size=0, max_position=128)
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega red green blue black white what which who is the after before").split()


def tiny_squad(path, articles=6, seed=0):
    """A SQuAD-format file: each question asks for the word after two given words."""
    rng = np.random.default_rng(seed)
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(3):
            words = list(rng.choice(WORDS[:26], 40))
            context = " ".join(words)
            qas = []
            for q in range(4):
                i = int(rng.integers(2, 39))
                answer = words[i]
                start = len(" ".join(words[:i])) + 1
                qas.append({"id": f"{a}-{p}-{q}", "question": f"what is after {words[i - 2]} {words[i - 1]}",
                            "answers": [{"text": answer, "answer_start": start}]})
            paragraphs.append({"context": context, "qas": qas})
        data.append({"title": f"a{a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"data": data}))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    tiny_squad(d / "squad.json")
    tok = syn.tiny_tokenizer(" ".join(WORDS))
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    model = BertQA(BertConfig(**{**TINY.to_dict(), "vocab_size": tok.get_vocab_size()}))
    save_model(model, d / "init.pt")
    return d


def batch_of(model, n=3, L=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (n, L), generator=g)
    types = (torch.arange(L) > 6).long().expand(n, L)
    lengths = torch.tensor([L, L - 5, 7][:n])
    mask = torch.arange(L)[None, :] < lengths[:, None]
    return ids, types, mask


def dequantize_weights_(model):
    """Replace each linear's weights by their int8 per-channel values, so torch and the
    engine/reference hold identical weights."""
    with torch.no_grad():
        for _, lin in model.linears():
            q, s = lin.weight_int8()
            lin.weight.copy_(q.float() * s[:, None])


def test_hidden_states_equal_transformers_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_checkpoint(tmp_path).eval()
    ids = torch.randint(0, 50, (2, 12))
    types = torch.zeros_like(ids)
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        got = ours.encode(ids, types, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dropping", ["mask", "gather"])
def test_all_ones_configuration_equals_the_plain_model(workdir, dropping):
    """The full model runs its own path (no significance, no selection); keeping every token
    through either dropping path gives its logits on real tokens up to fp32 summation order."""
    model = load_model(workdir / "init.pt").eval()
    for p in model.parameters():
        p.data += torch.randn_like(p) * 0.05
    ids, types, mask = batch_of(model)
    with torch.no_grad():
        a = model(ids, types, mask)
        b = model(ids, types, mask, [1.0, 1.0, 1.0], dropping=dropping)
        c = model(ids, types, mask, [1.0, 1.0, 0.5], dropping=dropping)
    for x, y in zip(a, b):
        torch.testing.assert_close(x[mask], y[mask], atol=2e-6, rtol=1e-5)
    assert (a[0][mask] - c[0][mask]).abs().max() > 1e-3  # dropping half the last layer's tokens shows


@pytest.mark.parametrize("ratios", [[1.0, 1.0, 1.0], [0.8, 0.5, 0.3], [0.5, 0.2, 0.1]])
def test_masked_drop_equals_physical_gather(workdir, ratios):
    """Training drops with masks; the numpy reference and the engine gather rows."""
    torch.manual_seed(1)
    model = load_model(workdir / "init.pt").eval()
    for p in model.parameters():  # a less flat attention than the tiny init
        p.data += torch.randn_like(p) * 0.05
    dequantize_weights_(model)
    ids, types, mask = batch_of(model)
    with torch.no_grad():
        start, end = model(ids, types, mask, ratios)
    cfg = model.config.to_dict()
    tensors = engine_tensors_of(model, compact_embeddings=False)
    fp32 = ref.ReferenceEncoder(cfg, tensors, "fp32")
    for b in range(len(ids)):
        n = int(mask[b].sum())
        want, _ = fp32.sequence(ids[b, :n].numpy(), types[b, :n].numpy(), ratios)
        np.testing.assert_allclose(start[b, :n].numpy(), want[:, 0], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(end[b, :n].numpy(), want[:, 1], atol=1e-4, rtol=1e-4)


def test_exported_file_matches_the_fake_quantized_model(workdir, tmp_path):
    from training.quantize import apply_calibration, collect
    torch.manual_seed(2)
    model = load_model(workdir / "init.pt").eval()
    for p in model.parameters():
        p.data += torch.randn_like(p) * 0.05
    tok = load_tokenizer(workdir / "tokenizer.json")
    from qualam_rt import squad
    feats = Features(tok, squad.load_examples(workdir / "squad.json")[:8])
    apply_calibration(model, collect(model, feats, [None, [0.8, 0.6, 0.4]], 4), "minmax")
    path = export_qrt(model, (workdir / "tokenizer.json").read_text(), tmp_path / "m.qrt", default_config=[0.8, 0.6, 0.4])
    engine = Engine(path, length_config="full")
    model.set_quantized(True)
    for ratios in (None, [0.8, 0.6, 0.4]):
        windows = feats.windows[:4]
        got = engine.logits(windows, "full" if ratios is None else tuple(ratios))
        batch = feats.collate(np.arange(4))
        with torch.no_grad():
            s, e = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], ratios)
        for i, g in enumerate(got):
            n = len(windows[i].input_ids)
            want = np.stack([s[i, :n].numpy(), e[i, :n].numpy()], 1)
            scale = 1 + np.abs(want).max()
            assert np.abs(g - want).max() < 0.02 * scale and np.abs(g - want).mean() < 3e-3 * scale
    meta, tensors = read_model(path)
    assert meta["default_config"] == [0.8, 0.6, 0.4] and tensors["embeddings.word"].dtype == np.int8
    assert "layers.0.qkv.input_quant" in engine_tensors(tensors)


def test_reexporting_a_qrt_changes_its_metadata_and_keeps_its_tensors(workdir, tmp_path):
    """`export model.qrt new.qrt --default-config ...`: the same tensors bit for bit (so the same
    logits), the new default, the provenance kept and the change recorded."""
    from training.export import main as export_main
    torch.manual_seed(6)
    model = load_model(workdir / "init.pt").eval()
    src = export_qrt(model, (workdir / "tokenizer.json").read_text(), tmp_path / "a.qrt", default_config=[0.8, 0.6, 0.4],
                     provenance={"data": "tiny"})
    export_main([str(src), str(tmp_path / "b.qrt"), "--default-config", "tokens:20,12,4",
                 "--provenance", '{"note": "default from held-out"}'])
    (meta_a, ta), (meta_b, tb) = read_model(src), read_model(tmp_path / "b.qrt")
    assert meta_b["default_config"] == {"tokens": [20, 12, 4]} and meta_a["default_config"] == [0.8, 0.6, 0.4]
    assert meta_b["provenance"]["data"] == "tiny" and meta_b["provenance"]["note"] == "default from held-out"
    assert "reexported" in meta_b["provenance"] and meta_b["frontier"] == meta_a["frontier"]
    assert meta_b["tokenizer"] == meta_a["tokenizer"] and sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and np.array_equal(ta[k], tb[k]), k
    assert Engine(tmp_path / "b.qrt").info()["default_config"] == {"tokens": [20, 12, 4]}


def test_finetune_lowers_the_loss_and_resumes(workdir):
    out = workdir / "ft"
    cfg = TrainConfig(step="finetune", init=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                      squad_train=str(workdir / "squad.json"), out=str(out), held_out_articles=1, epochs=6,
                      batch_size=8, lr=3e-3, warmup=0.0, bf16="false", save_every=5, eval_examples=8, max_seq_len=64, doc_stride=16)
    metrics = train(cfg)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0]["precision"] == "fp32" and records[0]["why"] == "asked for fp32"
    losses = [r["loss"] for r in records if "loss" in r]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
    assert metrics["steps"] == len(losses) and "held_out" in metrics
    # resume: a longer run continues from the checkpoint instead of starting over
    train(TrainConfig(**{**cfg.__dict__, "epochs": 7}))
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps[len(losses)] == len(losses) + 1


def test_a_run_ended_while_saving_keeps_its_last_whole_checkpoint(workdir, monkeypatch):
    import training.train as train_module
    out = workdir / "ft_killed"
    cfg = TrainConfig(step="finetune", init=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                      squad_train=str(workdir / "squad.json"), out=str(out), held_out_articles=1, epochs=2,
                      batch_size=8, bf16="false", save_every=1, eval_examples=0, max_seq_len=64, doc_stride=16)
    real_save, saves = torch.save, []

    def save_then_die(obj, f, *args, **kwargs):  # the second checkpoint: half written, then the process ends
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(train_module.torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.undo()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 1
    train(cfg)  # and the run resumes from it
    steps = [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps[:2] == [1, 2] and steps[2] == 2  # step 2 ran again: its checkpoint never landed


def test_lat_step_runs_and_trains_sub_models(workdir):
    from training.train import lat_step, sample_lengths
    model = load_model(workdir / "init.pt").train()
    ids, types, mask = batch_of(model, L=30)
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
             "start": torch.tensor([8, 9, 7]), "end": torch.tensor([9, 10, 7])}
    cfg = TrainConfig(step="lat")
    gen = torch.Generator().manual_seed(0)
    loss, parts = lat_step(model, batch, cfg, gen, lambda: torch.autocast("cpu", enabled=False))
    assert np.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert len(parts) == cfg.num_sandwich + 2 and loss == pytest.approx(sum(parts) / len(parts), rel=1e-3)
    # budgets drawn against a padded length far above the windows' drop nothing: those
    # sub-models are the full model, skipped (one forward pass), their parts exactly 0
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    _, parts = lat_step(model, batch, TrainConfig(step="lat", length_sampling="padded", max_seq_len=1000), gen,
                        lambda: torch.autocast("cpu", enabled=False))
    hook.remove()
    assert len(calls) == 1 and parts[1:] == [0.0] * (cfg.num_sandwich + 1) and parts[0] > 0
    # a frozen teacher: the full model learns its distributions (KL 0 while they are equal)
    # instead of the labels, the sub-models learn them too
    import copy
    teacher = copy.deepcopy(model).eval()
    model.zero_grad()
    _, parts = lat_step(model, batch, cfg, gen, lambda: torch.autocast("cpu", enabled=False), teacher)
    assert parts[0] < 1e-6 and parts[1] > 10 * parts[0] and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    _, parts = lat_step(model, batch, TrainConfig(step="lat", length_sampling="padded", max_seq_len=1000), gen,
                        lambda: torch.autocast("cpu", enabled=False), teacher)
    assert parts == [parts[0]] * (cfg.num_sandwich + 2)  # sub-models that drop nothing are the full model
    # fixed sub-models (the configurations users run) replace the smallest: each gets exactly
    # its keep counts, then num_sandwich random ones follow
    seen = []
    hook = model.register_forward_hook(lambda m, a, kw, out: seen.append(kw.get("length_config")), with_kwargs=True)
    cfg_fixed = TrainConfig(step="lat", num_sandwich=1, sandwich_configs="tokens:20,10,5; 0.5,0.5,0.25")
    _, parts = lat_step(model, batch, cfg_fixed, gen, lambda: torch.autocast("cpu", enabled=False), teacher)
    hook.remove()
    assert len(parts) == 4 and len(seen) == 4 and seen[0] is None
    assert [t.tolist() for t in seen[1]] == [[20, 20, 7], [10, 10, 7], [5, 5, 5]]
    assert [t.tolist() for t in seen[2]] == [[15, 13, 4], [15, 13, 4], [8, 7, 2]]
    with pytest.raises(ValueError, match="sandwich_configs"):
        lat_step(model, batch, TrainConfig(step="lat", sandwich_configs="full"), gen,
                 lambda: torch.autocast("cpu", enabled=False), teacher)
    n = torch.tensor([30, 25, 7])
    smallest = sample_lengths(n, 3, 0.2, True, gen)
    assert [t.tolist() for t in smallest] == [[24, 20, 6], [20, 16, 5], [16, 13, 4]]
    for _ in range(20):
        prev = n
        for cur in sample_lengths(n, 3, 0.2, False, gen):
            assert ((cur <= prev) & (cur >= torch.ceil(0.8 * prev.double()).long())).all()
            prev = cur
    # LAT's way: budgets drawn against the padded length, each window keeps min(budget, its length)
    assert [t.tolist() for t in sample_lengths(n, 3, 0.2, True, gen, padded_to=40)] == [[30, 25, 7], [26, 25, 7],
                                                                                          [21, 21, 7]]
    for _ in range(20):
        budgets = sample_lengths(torch.tensor([40]), 3, 0.2, False, torch.Generator().manual_seed(_))
        kept = sample_lengths(n, 3, 0.2, False, torch.Generator().manual_seed(_), padded_to=40)
        assert all(torch.equal(k, torch.minimum(b, n)) for b, k in zip(budgets, kept))


def test_pipeline_end_to_end_with_valid_frontier(workdir):
    """finetune -> lat -> search -> quantize -> export on tiny data; the file answers."""
    from training.pipeline import run
    common = {"init": str(workdir / "init.pt"), "tokenizer": str(workdir / "tokenizer.json"), "batch_size": 8,
              "max_seq_len": 64, "doc_stride": 16, "eval_examples": 0, "lr": 3e-3}
    config = {"out": str(workdir / "pipe"), "squad_train": str(workdir / "squad.json"), "held_out_articles": 2,
              "finetune": common | {"epochs": 2}, "lat": common | {"epochs": 1},
              "search": {"eval_examples": 16, "population": 6, "mutations": 4, "crossovers": 4, "iterations": 2,
                         "latency_repeats": 1},
              "quantize": {"calib_examples": 8, "eval_examples": 12, "batch_size": 4, "dynamic_inputs": "ffn1"},
              "export": {"file": "tiny.qrt"}}
    path = run(config)
    frontier = json.loads((workdir / "pipe" / "search" / "frontier.json").read_text())
    front = frontier["frontier"]
    assert front and (workdir / "pipe" / "search" / "frontier.png").stat().st_size > 1000
    for p in front:
        assert all(0 < r <= 1 for r in p["ratios"]) and all(a >= b for a, b in zip(p["ratios"], p["ratios"][1:]))
        assert p["latency_ms"] > 0
    # no frontier member dominated by another evaluated gene
    cache = json.loads((workdir / "pipe" / "search" / "cache.json").read_text())["points"].values()
    for p in front:
        assert not any(q["cost"] <= p["cost"] and q["f1"] >= p["f1"] and (q["cost"], q["f1"]) != (p["cost"], p["f1"])
                       for q in cache if q["cost"] >= min(f["cost"] for f in front))
    report = json.loads((workdir / "pipe" / "quantize" / "report.json").read_text())
    assert set(report["methods"]) == {"minmax", "percentile", "entropy"}
    engine = Engine(path)
    assert engine.length_config == tuple(frontier["default_config"])
    _, tensors = read_model(path)
    assert "layers.0.qkv.input_quant" in tensors and "layers.0.ffn1.input_quant" not in tensors
    a = engine.answer("what is after alpha beta", "alpha beta gamma delta")
    assert "alpha beta gamma delta"[a["start"]:a["end"]] == a["answer"]
    # resumable: a second run finds every result and does nothing; another config is refused
    assert run(config) == path
    with pytest.raises(SystemExit, match="search"):
        run(config | {"search": config["search"] | {"eval_examples": 17}})
    # token budgets as genes (the paper's form), MACs counted both ways; a stale cache is refused
    from training.search import SearchConfig, search
    scfg = SearchConfig(model=str(workdir / "pipe" / "lat" / "model.pt"), out=str(workdir / "search_tokens"),
                        squad_train=str(workdir / "squad.json"), held_out_articles=2, eval_examples=8, population=4,
                        mutations=2, crossovers=2, iterations=1, genes="tokens", latency_repeats=1, seeds="300,200,33")
    result = search(scfg)
    cached = json.loads((workdir / "search_tokens" / "cache.json").read_text())["points"]
    assert "[300, 200, 33]" in cached  # a seed (e.g. a trained configuration) is evaluated from the start
    from training.search import late_drop_genes
    # so are late drops: every token through the first half, then geometric drops
    assert late_drop_genes(3) == [(384, 269, 189), (384, 192, 96), (384, 116, 35),
                                  (384, 384, 269), (384, 384, 192), (384, 384, 116)]
    assert late_drop_genes(6)[1] == (384, 384, 384, 192, 96, 48) and late_drop_genes(1) == [(269,), (192,), (116,)]
    assert all(json.dumps(list(g)) in cached for g in late_drop_genes(3))
    from training.search import parse_seeds
    for bad in ("300,200", "300,310,33", "0,0,0", "385,1,1"):
        with pytest.raises(ValueError, match="seed gene"):
            parse_seeds(bad, 3)
    for p in result["frontier"]:
        assert "tokens" in p and p["tokens"] == p["lengths_at_384"] and "ratios" not in p
        assert 0 < p["real_macs_share"] <= 1 and 0 < p["padded_384_macs_share"] <= 1
        # windows here are far shorter than the budgets: real tokens lose less than a padded 384 input would
        assert p["real_macs_share"] >= p["padded_384_macs_share"] - 1e-9
    assert isinstance(result["default_config"], dict) and set(result["default_config"]) == {"tokens"}
    with pytest.raises(SystemExit, match="eval_examples"):
        search(SearchConfig(**{**scfg.__dict__, "eval_examples": 9}))


def test_relation_distillation_lowers_its_loss(workdir):
    from training.distill import DistillConfig, distill, relation_loss
    # identical vectors have zero relation loss, different ones a positive one
    x = torch.randn(2, 7, 16)
    mask = torch.ones(2, 7, dtype=torch.bool)
    assert float(relation_loss((x, x, x), (x, x, x), 4, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_loss((x, x, x), (torch.randn(2, 7, 8),) * 3, 4, mask)) > 0
    cfg = DistillConfig(teacher=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                        out=str(workdir / "distill"), squad_train=str(workdir / "squad.json"), student_layers=2,
                        student_hidden=16, student_heads=2, student_intermediate=32, teacher_layer=1,
                        relation_heads=4, max_seq_len=32, batch_size=8, steps=60, lr=3e-3)
    result = distill(cfg)
    assert result["last_loss"] < 0.7 * result["first_loss"]
    assert load_model(workdir / "distill" / "model.pt").config.hidden == 16


@pytest.mark.parametrize("extra_rows", [0, 3])
@pytest.mark.parametrize("config", [[0.8, 0.5, 0.3], {"tokens": [18, 11, 4]}, {"ratios": [0.9, 0.9, 0.2]}])
def test_gathered_drop_equals_masked_drop_in_logits_and_gradients(workdir, config, extra_rows, monkeypatch):
    """Sub-models drop rows physically in training; the masked form computes every row. Both
    select the same tokens, so they differ only by fp32 summation order (matmuls over another
    number of rows): a few ulps of values of order 1. Gathered widths wider than the largest
    keep (padding rows, as bf16 rounds them) change nothing either."""
    import training.model
    monkeypatch.setattr(training.model, "gathered_width", lambda kept, limit: min(limit, kept + extra_rows))
    torch.manual_seed(3)
    model = load_model(workdir / "init.pt").train()
    for p in model.parameters():
        p.data += torch.randn_like(p) * 0.05
    ids, types, mask = batch_of(model)
    results = []
    for dropping in ("mask", "gather"):
        model.zero_grad()
        s, e = model(ids, types, mask, config, dropping=dropping)
        s, e = s.masked_fill(~mask, 0), e.masked_fill(~mask, 0)
        (s.square().sum() + (e * torch.linspace(-1, 1, e.shape[1])).sum()).backward()
        results.append((s.detach(), e.detach(), [p.grad.clone() for p in model.parameters()]))
    (s0, e0, g0), (s1, e1, g1) = results
    torch.testing.assert_close(s1, s0, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(e1, e0, atol=2e-6, rtol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_passes_sharing_one_embedding_give_the_gradients_of_separate_ones(workdir):
    """lat_step embeds a batch once for all its passes; the word table's gradient is then one
    backward instead of one per pass: the same sums (to fp32 summation order)."""
    torch.manual_seed(4)
    model = load_model(workdir / "init.pt").train()
    ids, types, mask = batch_of(model)
    grads = []
    for shared in (False, True):
        model.zero_grad()
        x = model.embed(ids, types) if shared else None
        loss = 0
        for config in (None, [0.8, 0.5, 0.3], {"tokens": [18, 11, 4]}):
            s, e = model(ids, types, mask, config, embedded=x)
            loss = loss + (s.masked_fill(~mask, 0).square().sum() + e.masked_fill(~mask, 0).sum())
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0]["word.weight"].abs().sum() > 0
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4, msg=n)


def test_sub_models_share_the_full_models_layers_before_their_first_drop(workdir, monkeypatch):
    """A sub-model whose first layers keep every token of every sequence starts from the full
    model's outputs of them (lat_step): the same losses and gradients as computing them again,
    to fp32 summation order (their backward sums the passes' gradients before it runs, not
    after), and fewer layer passes: 3 (full) + 3 per sub-model without sharing; with it the
    budgets (20, 12, 4) skip layer 1 (every window is at most 20 tokens), the ratios
    (1, 1, 0.3) layers 1-2, and (0.8, 0.5, 0.3) nothing."""
    import contextlib

    import training.train as tt
    torch.manual_seed(5)
    model = load_model(workdir / "init.pt").train()
    for p in model.parameters():
        p.data += torch.randn_like(p) * 0.05
    ids, types, mask = batch_of(model)
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
             "start": torch.tensor([3, 5, 2]), "end": torch.tensor([4, 6, 3])}
    cfg = TrainConfig(step="lat", sandwich_configs="tokens:20,12,4;1,1,0.3;0.8,0.5,0.3", num_sandwich=0)
    passes = [0]

    def counted(f):
        def run(*a, **k):
            passes[0] += 1
            return f(*a, **k)
        return run
    for layer in model.layers:
        layer.heads_of = counted(layer.heads_of)
    results = []
    for share in (False, True):
        monkeypatch.setattr(tt, "SHARE_LAYERS", share)
        model.zero_grad()
        passes[0] = 0
        loss, parts = tt.lat_step(model, batch, cfg, torch.Generator().manual_seed(0), contextlib.nullcontext)
        results.append((parts, {n: p.grad.clone() for n, p in model.named_parameters()}, passes[0]))
    (parts0, g0, n0), (parts1, g1, n1) = results
    assert (n0, n1) == (12, 9)
    assert min(parts0[1:]) > 0
    assert parts1 == pytest.approx(parts0, rel=1e-5, abs=1e-7)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)


def test_compiled_lat_step_gives_the_eager_losses_and_gradients(workdir):
    """TrainConfig.torch_compile: the step through torch.compile (dynamic shapes, the graph broken
    where the drop-and-restore sizes its gathers) computes what the eager step does, to fp32
    summation order (inductor fuses and reorders reductions)."""
    import contextlib

    from training.train import compiled, lat_step
    torch.manual_seed(6)
    model = load_model(workdir / "init.pt").train()
    cfg = TrainConfig(step="lat", sandwich_configs="tokens:20,12,4;0.8,0.5,0.3", num_sandwich=1)
    results = []
    for step_model in (model, compiled(model)):
        for L in (30, 23):  # two padded lengths: one compiled graph serves both
            ids, types, mask = batch_of(model, L=L, seed=L)
            batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
                     "start": torch.tensor([3, 5, 2]), "end": torch.tensor([4, 6, 3])}
            model.zero_grad()
            _, parts = lat_step(step_model, batch, cfg, torch.Generator().manual_seed(L), contextlib.nullcontext)
            results.append((parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    for (parts0, g0), (parts1, g1) in zip(results[:2], results[2:]):
        assert min(parts0[1:]) > 0
        assert parts1 == pytest.approx(parts0, rel=1e-4, abs=1e-6)
        assert g1.keys() == g0.keys()
        for n in g0:
            torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=n)


def test_gathered_widths_round_up_under_bf16_only():
    from training.model import ROW_MULTIPLE, gathered_width
    assert gathered_width(17, 384) == 17
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gathered_width(17, 384) == 2 * ROW_MULTIPLE and gathered_width(ROW_MULTIPLE, 384) == ROW_MULTIPLE
        assert gathered_width(17, 20) == 20 and gathered_width(17, 10) == 17


def test_token_budgets_drop_only_below_a_sequences_length():
    from training.model import keep_counts
    n = torch.tensor([30, 12, 5])
    counts = keep_counts(n, {"tokens": [20, 20, 10, 1]})
    assert [c.tolist() for c in counts] == [[20, 12, 5], [20, 12, 5], [10, 10, 5], [2, 2, 2]]
    ratios = keep_counts(n, {"ratios": [0.5, 0.5]})
    assert [c.tolist() for c in ratios] == [[15, 6, 3], [15, 6, 3]]
    assert [c.tolist() for c in keep_counts(n, (0.5, 0.5))] == [c.tolist() for c in ratios]
    with pytest.raises(ValueError, match="ratios' or 'tokens"):
        keep_counts(n, {"budgets": [3]})


def test_model_loaded_from_a_qrt_file_has_its_dequantized_weights(workdir, tmp_path):
    from training.model import load_qrt
    model = load_model(workdir / "init.pt")
    path = export_qrt(model, (workdir / "tokenizer.json").read_text(), tmp_path / "m.qrt")
    loaded, tokenizer_json = load_qrt(path)
    assert tokenizer_json == (workdir / "tokenizer.json").read_text()
    for name, lin in model.linears():
        q, s = lin.weight_int8()
        got = dict(loaded.linears())[name]
        torch.testing.assert_close(got.weight, q.float() * s[:, None], atol=0, rtol=0)
        torch.testing.assert_close(got.bias, lin.bias, atol=0, rtol=0)
    torch.testing.assert_close(loaded.position.weight, model.position.weight, atol=0, rtol=0)
    word_scale = model.word.weight.abs().amax(1, keepdim=True) / 127
    assert (loaded.word.weight - model.word.weight).abs().le(word_scale / 2 + 1e-7).all()


def test_resuming_with_another_configuration_is_refused(workdir):
    out = workdir / "ft_identity"
    cfg = TrainConfig(step="finetune", init=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                      squad_train=str(workdir / "squad.json"), out=str(out), held_out_articles=1, epochs=1,
                      batch_size=8, save_every=2, eval_examples=0, max_seq_len=64, doc_stride=16)
    train(cfg)
    with pytest.raises(SystemExit, match="lr"):
        train(TrainConfig(**{**cfg.__dict__, "lr": 1e-3, "epochs": 2}))


def test_held_out_articles_zero_trains_on_every_article(workdir):
    from training.data import split_articles
    train_ex, held = split_articles(workdir / "squad.json", 0)
    assert len(train_ex) == 6 * 3 * 4 and held == []
    with pytest.raises(ValueError, match=">= 0"):
        split_articles(workdir / "squad.json", -1)


def test_bf16_is_chosen_from_the_cpu_unless_asked(monkeypatch):
    from training import train as T
    assert T.resolve_bf16("false")[0] is False and T.resolve_bf16("true")[0] is True
    monkeypatch.setattr(T, "native_bf16", lambda: True)
    assert T.resolve_bf16("auto") == (True, "auto: the CPU has native bf16 (amx_bf16 or avx512_bf16)")
    monkeypatch.setattr(T, "native_bf16", lambda: False)
    assert T.resolve_bf16("auto")[0] is False


def test_data_offset_enters_the_seeded_batch_order_part_of_an_epoch_in():
    """A run with data_offset 0.5 trains on the batches a run without it reaches half an epoch
    later (the half a 0.5-epoch run did not see), and goes on into the next epoch's shuffle."""
    from itertools import islice

    from training.train import batch_order

    class Windows:  # what batch_order reads of Features: the windows' count and lengths
        lengths = np.random.default_rng(1).integers(10, 300, 203)
        batches = Features.batches

        def __len__(self):
            return len(self.lengths)

    feats, cfg = Windows(), TrainConfig(batch_size=4, seed=3)
    epochs = [[b.tolist() for b in feats.batches(4, shuffle=True, rng=np.random.default_rng(3 + e))] for e in range(3)]
    assert [len(e) for e in epochs] == [51] * 3 and epochs[0] != epochs[1]  # ceil(203 / 4) batches, a new shuffle
    plain = [b.tolist() for b in islice(batch_order(feats, cfg, 0), 3 * 51)]
    assert plain == sum(epochs, [])
    half = TrainConfig(batch_size=4, seed=3, data_offset=0.5)
    assert [b.tolist() for b in islice(batch_order(feats, half, 0), 60)] == plain[26:86]
    assert [b.tolist() for b in islice(batch_order(feats, half, 30), 5)] == plain[56:61]  # resumed at step 30


def test_search_builds_frontier_and_default_from_confirmation_scores(tmp_path):
    """confirm_examples: the near-frontier genes are scored again and the frontier and default come
    from those scores; a gene the search underrated beyond the slack is not scored again."""
    from dataclasses import replace

    from training.search import N_REF, SearchConfig, near_frontier, search

    class Scores:
        """F1 of a 2-layer gene: a smooth function of its cost, plus this evaluation's noise."""
        config = {"layers": 2}

        def __init__(self, noise):
            self.noise, self.calls = noise, []

        def __call__(self, gene):
            self.calls.append(gene)
            cost = sum(gene) / (2 * N_REF)
            return {"ratios": [g / N_REF for g in gene], "lengths_at_384": list(gene), "cost": cost,
                    "macs_vs_bert_base": cost, "f1": 80 - 20 * (1 - cost) ** 2 + self.noise.get(gene, 0.0)}

    small, a, b, c = (308, 247), (384, 192), (384, 269), (384, 300)
    # the search's few questions overrate a by 1.0, underrate b by 0.3 (within the slack) and c by 3
    search_noise = {a: 1.0, b: -0.3, c: -3.0}
    cfg = SearchConfig(out=str(tmp_path / "plain"), population=1, iterations=0, seeds="384,300", confirm_slack=1.0)
    plain = search(cfg, evaluate=Scores(search_noise))
    assert plain["default_config"] == [1.0, 0.5] and plain["confirmed"] == 0  # a: cheapest within 0.5 of full
    confirm = Scores({})
    result = search(replace(cfg, out=str(tmp_path / "confirmed"), confirm_examples=50), Scores(search_noise), confirm)
    assert set(confirm.calls) == {(384, 384), small, a, b} and result["confirmed"] == 4
    assert [p["lengths_at_384"] for p in result["frontier"]] == [list(small), list(a), list(b), [384, 384]]
    assert result["default_config"] == [1.0, 269 / N_REF]  # b: 79.55 on the confirmation, within 0.5 of 80
    assert [p["search_f1"] - p["f1"] for p in result["frontier"] if tuple(p["lengths_at_384"]) == b] == [
        pytest.approx(-0.3)]
    # resumable: a rerun scores nothing again
    again = Scores({})
    assert search(replace(cfg, out=str(tmp_path / "confirmed"), confirm_examples=50), Scores(search_noise),
                  again) == result and again.calls == []
    assert near_frontier({a: {"cost": 0.5, "f1": 70.0}, b: {"cost": 0.6, "f1": 69.6}, c: {"cost": 0.7, "f1": 69.4}},
                         0.5) == [a, b]


def test_distill_loss_softens_both_distributions_and_scales_by_temperature_squared():
    from training.train import distill_loss
    gen = torch.Generator().manual_seed(3)
    s, e, ts, te = (torch.randn(2, 7, generator=gen) * 4 for _ in range(4))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False  # padding takes no probability on either side

    def kl(student, teacher, T):  # plain numpy, per row over the valid positions
        out = 0.0
        for row in range(2):
            v = mask[row].numpy()
            a, b = student[row].numpy()[v] / T, teacher[row].numpy()[v] / T
            log_q = a - a.max() - np.log(np.exp(a - a.max()).sum())
            p = np.exp(b - b.max()) / np.exp(b - b.max()).sum()
            out += (p * (np.log(p) - log_q)).sum()
        return out / 2

    for T in (1.0, 2.0, 4.0):
        expected = (kl(s, ts, T) + kl(e, te, T)) / 2 * T ** 2
        assert float(distill_loss(s, e, ts, te, mask, T)) == pytest.approx(expected, rel=1e-5)
    assert float(distill_loss(s, e, ts, te, mask)) == pytest.approx(float(distill_loss(s, e, ts, te, mask, 1.0)))


def test_min_window_tokens_trains_only_on_long_windows(workdir, monkeypatch):
    from training.data import split_articles
    train_ex, _ = split_articles(workdir / "squad.json", 1)
    lengths = Features(load_tokenizer(workdir / "tokenizer.json"), train_ex, 40, 16, 64).lengths  # contexts in 2-3 windows
    threshold = int(np.median(lengths)) + 1
    assert 0 < (lengths >= threshold).sum() < len(lengths)  # the tiny data has windows on both sides
    shortest = []
    collate = Features.collate
    monkeypatch.setattr(Features, "collate", lambda self, index: (shortest.append(int(self.lengths[index].min())),
                                                                   collate(self, index))[1])
    cfg = TrainConfig(step="lat", init=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                      squad_train=str(workdir / "squad.json"), out=str(workdir / "lat_long"), held_out_articles=1,
                      epochs=1, batch_size=4, bf16="false", save_every=100, eval_examples=0, max_seq_len=40,
                      doc_stride=16, num_sandwich=1, min_window_tokens=threshold)
    assert train(cfg)["steps"] == -(-int((lengths >= threshold).sum()) // 4)
    assert shortest and min(shortest) >= threshold


def test_answer_keep_loss_is_a_hinge_on_log_significance_and_trains_it(workdir):
    from training.train import KEEP_ANSWER_MARGIN, answer_keep_loss
    torch.manual_seed(1)
    model = load_model(workdir / "init.pt")
    ids, types, mask = batch_of(model, n=3, L=20)
    mask = torch.stack([mask[0], mask[0], mask[1], mask[2]])  # lengths 20, 20, 15, 7
    ids, types = torch.cat([ids[:1], ids]), torch.cat([types[:1], types])
    batch = {"attention_mask": mask, "start": torch.tensor([3, 0, 9, 4]), "end": torch.tensor([5, 0, 12, 4])}
    budgets = [12, 10]  # the 7-token window is shorter than both; window 1 holds no answer (label 0)
    inputs = [model.embed(ids, types)]
    inputs.append(model.layers[0].tail(model.layers[0].attend(*model.layers[0].heads_of(inputs[0]), mask)[0], inputs[0]))

    def expected():  # plain numpy, float64
        terms = []
        for layer, x, budget in zip(model.layers, inputs, budgets):
            w, b = layer.qkv.weight.detach().double().numpy(), layer.qkv.bias.detach().double().numpy()
            for row in range(4):
                n = int(mask[row].sum())
                if n <= budget or int(batch["start"][row]) == 0:
                    continue
                qkv = x[row, :n].detach().double().numpy() @ w.T + b
                H, h = model.config.hidden, model.config.heads
                q, k = (qkv[:, i * H:(i + 1) * H].reshape(n, h, H // h).transpose(1, 0, 2) for i in (0, 1))
                scores = q @ k.transpose(0, 2, 1) / np.sqrt(H // h)
                p = np.exp(scores - scores.max(-1, keepdims=True))
                sig = (p / p.sum(-1, keepdims=True)).sum((0, 1))   # over heads and (valid) query rows
                threshold = np.sort(sig)[::-1][budget]             # the most significant dropped token
                for g in (batch["start"][row], batch["end"][row]):
                    terms.append(max(0.0, np.log(threshold) + KEEP_ANSWER_MARGIN - np.log(sig[int(g)])))
        return np.mean(terms), len(terms)

    value, count = expected()
    assert count == 8 and value > 0  # (start, end) of windows 0 and 2, at both layers
    assert float(answer_keep_loss(model, inputs, batch, budgets).detach()) == pytest.approx(value, rel=1e-4)

    # Its gradient, through the attention paid to the answer tokens, trains the first layer to keep them.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        x = model.embed(ids, types)
        loss = answer_keep_loss(model, [x], batch, budgets[:1])
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * value


def test_answer_drops_bench_finds_the_layer_that_drops_the_start_token(workdir):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from answer_drops import start_drops
    model = load_model(workdir / "init.pt").eval()
    with torch.no_grad():  # larger weights: the layers' outputs count, not only the embeddings the residuals carry
        for layer in model.layers:
            for linear in (layer.qkv, layer.out, layer.ffn1, layer.ffn2):
                linear.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(5))
    ids, types, mask = batch_of(model, n=3, L=20)
    config = {"tokens": [9, 5, 3]}
    with torch.inference_mode():
        sub = model(ids, types, mask, config)[0].masked_fill(~mask, -1e4).argmax(-1)  # the gathered form
        full = model(ids, types, mask)[0].masked_fill(~mask, -1e4).argmax(-1)
        assert not torch.equal(sub, model.qa(model.embed(ids, types))[..., 0].masked_fill(~mask, -1e4).argmax(-1))
        # gold starts: the sub-model's picks, so its accuracy must be 1 and the full model's says where they agree
        batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "start": sub, "end": sub}
        _, sub_ok, full_ok = start_drops(model, batch, config)
        # gold starts: the tokens least significant in layer 1, which drops them where the window is longer
        # than its budget of 9 tokens (the first two)
        layer = model.layers[0]
        _, probs = layer.attend(*layer.heads_of(model.embed(ids, types)), mask)
        least = layer.significance(probs, mask).masked_fill(~mask, float("inf")).argmin(-1)
        dropped_at, _, _ = start_drops(model, batch | {"start": least, "end": least}, config)
    assert sub_ok.all() and (full_ok == (full == sub).numpy()).all()
    assert list(dropped_at[:2]) == [1, 1] and dropped_at[2] in (0, 2, 3)
    never, _, _ = start_drops(model, batch, {"tokens": [20, 20, 20]})
    assert (never == 0).all()


def test_answer_drops_bench_loads_a_qrt_as_its_dequantized_model(workdir, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from answer_drops import load
    from training.model import load_qrt
    path = export_qrt(load_model(workdir / "init.pt"), (workdir / "tokenizer.json").read_text(), tmp_path / "m.qrt")
    (from_qrt, tok_qrt), (from_pt, tok_pt) = load(str(path)), load(str(workdir / "init.pt"))
    text = "Which river flows through Paris? The Seine."
    assert tok_qrt.encode(text).ids == tok_pt.encode(text).ids
    assert not from_qrt.training and not from_pt.training
    ids, types, mask = batch_of(from_pt, n=2, L=12)
    with torch.inference_mode():
        got, want = from_qrt(ids, types, mask)[0], load_qrt(path)[0].eval()(ids, types, mask)[0]
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_lat_run_with_answer_keep_loss_logs_it_last(workdir):
    cfg = TrainConfig(step="lat", init=str(workdir / "init.pt"), tokenizer=str(workdir / "tokenizer.json"),
                      squad_train=str(workdir / "squad.json"), out=str(workdir / "lat_keep"), held_out_articles=1,
                      epochs=1, batch_size=4, bf16="false", save_every=100, eval_examples=0, max_seq_len=40,
                      doc_stride=16, num_sandwich=1, keep_answer_budgets="12,8", keep_answer_weight=1.0)
    train(cfg)
    parts = [json.loads(line)["parts"] for line in (workdir / "lat_keep" / "log.jsonl").read_text().splitlines()
             if '"parts"' in line]
    assert parts and all(len(p) == 4 for p in parts)  # full, smallest, one random sub-model, then the new loss
    assert any(p[-1] > 0 for p in parts)
    with pytest.raises(ValueError, match="keep_answer_budgets"):
        train(TrainConfig(**{**cfg.__dict__, "keep_answer_budgets": "", "out": str(workdir / "lat_keep2")}))
