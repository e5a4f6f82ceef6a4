"""Thin Prefect tasks over :mod:`inflow.pipeline`, one per step."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from inflow import paths
from inflow.config import Params, SelectConfig
from inflow.pipeline import baselines, coverage, distill, evaluate, in2core, models, prepare, select, train


@task(name="prepare-benchmark", cache_policy=NO_CACHE)
def prepare_benchmark(params: Params) -> dict:
    manifest = prepare.prepare_benchmark(params.benchmark, paths.BENCHMARK, params.data)
    get_run_logger().info("benchmark written to %s", paths.BENCHMARK)
    return manifest


@task(name="build-tokenizer", cache_policy=NO_CACHE)
def build_tokenizer(params: Params) -> dict:
    manifest = prepare.build_tokenizer(params.tokenizer, params.data, paths.TOKENIZER)
    get_run_logger().info("tokenizer: %s", manifest)
    return manifest


@task(name="build-base-model", cache_policy=NO_CACHE)
def build_base_model(params: Params, role: str) -> dict:
    cfg = getattr(params, role)
    texts = prepare.demo_texts(params.data, prepare.pretrains_on_pool(params.data)) if cfg.build else []
    manifest = models.build_base_model(cfg, paths.TOKENIZER, texts, paths.base_model_dir(role),
                                       params.data.max_seq_len)
    get_run_logger().info("base model %s: %s", role, manifest)
    return manifest


@task(name="warmup-train", cache_policy=NO_CACHE)
def warmup_train(params: Params) -> dict:
    manifest = train.run_warmup(params.warmup, params.data, paths.base_model_dir("selector"), paths.WARMUP)
    get_run_logger().info("warmup: %s", manifest)
    return manifest


@task(name="less-select", cache_policy=NO_CACHE)
def less_select(params: Params) -> dict:
    manifest = select.run_less(params.select, params.features, params.data, params.features.warmup_dir,
                               paths.base_model_dir("selector"), selector="selector")
    get_run_logger().info("LESS selection: %s", manifest)
    return manifest


@task(name="distill-select", cache_policy=NO_CACHE)
def distill_select(params: Params) -> dict:
    manifest = distill.run_distill(params.distill, params.select, params.features, params.data,
                                   params.features.warmup_dir, paths.base_model_dir("selector"), selector="selector")
    get_run_logger().info("Influence Distillation selection: %s", manifest)
    return manifest


@task(name="in2core-train", cache_policy=NO_CACHE)
def in2core_train(params: Params) -> dict:
    manifest = in2core.train_pool_model(params.in2core, params.warmup, params.data, paths.base_model_dir("selector"))
    get_run_logger().info("In2Core model: %s", manifest)
    return manifest


@task(name="in2core-select", cache_policy=NO_CACHE)
def in2core_select(params: Params) -> dict:
    manifest = in2core.run_in2core(params.in2core, params.data, selector="selector")
    get_run_logger().info("In2Core coreset: %s", {k: v for k, v in manifest.items() if k != "reduced"})
    return manifest


@task(name="coverage-report", cache_policy=NO_CACHE)
def coverage_report(params: Params) -> dict:
    summary = coverage.run_coverage(params.in2core, params.evaluate, params.data, paths.base_model_dir("target"),
                                    paths.FINETUNED / "in2core")
    get_run_logger().info("coverage: %s", {t: {k: v for k, v in s.items() if k != "least_covered"}
                                           for t, s in summary["tasks"].items()})
    return summary


@task(name="baseline-select", cache_policy=NO_CACHE)
def baseline_select(params: Params) -> dict:
    coreset = SelectConfig(fraction=params.in2core.fraction, count=params.in2core.count, seed=params.select.seed)
    manifest = baselines.run_baselines(params.select, params.data, coreset)
    get_run_logger().info("baselines: %s", manifest)
    return manifest


@task(name="bm25-select", cache_policy=NO_CACHE)
def bm25_select(params: Params) -> dict:
    manifest = baselines.run_bm25(params.select, params.baselines, params.data)
    get_run_logger().info("BM25 selection: %s", manifest)
    return manifest


@task(name="rds-select", cache_policy=NO_CACHE)
def rds_select(params: Params) -> dict:
    model = params.features.base_model or paths.base_model_dir("selector")
    manifest = baselines.run_rds(params.select, params.baselines, params.data, model, selector="selector")
    get_run_logger().info("RDS selection: %s", manifest)
    return manifest


@task(name="finetune-target", cache_policy=NO_CACHE)
def finetune_target(params: Params, method: str, selection: Path) -> str:
    out = paths.finetuned_dir(method, selection.stem)
    manifest = train.run_finetune(params.finetune, params.data, paths.base_model_dir("target"), selection, out)
    get_run_logger().info("fine-tuned %s/%s: %s", method, selection.stem, manifest)
    return str(out)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_model(params: Params, adapter_dir: Path) -> dict:
    metrics = evaluate.run_evaluate(params.evaluate, params.data, paths.base_model_dir("target"), adapter_dir)
    for name, m in metrics.items():
        get_run_logger().info("%s on %s: loss %.4f, exact match %.3f", adapter_dir, name, m["loss"],
                              m["exact_match"])
    return metrics
