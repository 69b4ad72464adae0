"""The distributed fine-tuning manifests (kit/deploy/training.py): Indexed Job, headless Service, RWX claim, network
policy; sizing from reports/train.json; written by `render` beside the other sets; strict schema and checkov."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from kit.core.params import load_params
from kit.core.reports import TrainReport, write_report
from kit.deploy.checkov import find_checkov
from kit.deploy.manifests import build_manifests, render
from kit.deploy.training import job_name, torchrun_args, train_sizing
from kit.deploy.validate import validate_dir

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33.0"
TRAINING_FILES = {"training/job.yaml", "training/service.yaml", "training/pvc.yaml", "training/networkpolicy.yaml"}


def train_report(samples_per_s: float = 46.8, train_s: float = 171.0, processes: int = 1, threads: int = 2,
                 resumed: int | None = None) -> TrainReport:  # fmt: skip
    """A complete, small TrainReport whose speed figures are the arguments."""
    scores = {"accuracy": 0.8, "macro_f1": 0.8, "per_class": {}}
    run = {
        "base_model": "tiny", "steps": 250, "max_steps": 250, "epochs": 1.0, "stopped_early": False,
        "best_step": 250, "best_val_macro_f1": 0.8, "val_evaluations": 5, "resumed_from_step": resumed,
        "train_time_s": train_s, "train_samples_per_s": samples_per_s, "test_time_s": 10.0,
        "test_samples_per_s": 200.0, "processes": processes, "threads_per_process": threads, "fingerprint": "x",
    }  # fmt: skip
    return TrainReport.model_validate({
        "labels": ["a", "b"], "model": scores, "train": run, "gate": {"min_macro_f1": 0.5, "passed": True},
        "data": {"train_rows": 8000, "train_rows_available": 8000, "validation_rows": 1000, "test_rows": 3000,
                 "train_class_counts": {"a": 4000, "b": 4000}},
        "outputs": {"model_dir": "models/finetune"},
    })  # fmt: skip


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


def _with(params, **training):
    return params.model_copy(
        update={"deploy": params.deploy.model_copy(
            update={"training": params.deploy.training.model_copy(update=training)})}
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, params):
    """A project with a measured fine-tuning run and a 30 MiB weights file, rendered like the deploy stage does."""
    root = tmp_path_factory.mktemp("proj")
    write_report(root / "reports" / "train.json", train_report())
    (root / "models" / "finetune").mkdir(parents=True)
    (root / "models" / "finetune" / "model.safetensors").write_bytes(b"\0" * (30 * 2**20))
    out = root / "deploy" / "k8s"
    render(params, report_path=None, out_dir=out, root=root)
    return out


def _doc(out: Path, rel: str) -> dict:
    return yaml.safe_load((out / rel).read_text())


def test_render_writes_the_training_set(rendered, params):
    assert TRAINING_FILES <= {str(p.relative_to(rendered)) for p in rendered.rglob("*.yaml")}
    tr = params.deploy.training
    job, svc = _doc(rendered, "training/job.yaml"), _doc(rendered, "training/service.yaml")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == tr.nnodes
    # Pod 0 is reachable as <job>-0.<service>: the rendezvous endpoint in every pod's torchrun command.
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    c = pod["containers"][0]
    endpoint = f"{job['metadata']['name']}-0.{svc['metadata']['name']}:{tr.rdzv_port}"
    assert c["command"] == ["torchrun"]
    assert c["args"][: len(torchrun_args(params, endpoint, job_name(params)))] == torchrun_args(
        params, endpoint, job_name(params)
    )
    assert c["args"][c["args"].index("--no-python") + 1 :][:2] == ["kit", "finetune"]
    # Preemption: not counted as a failure; the replacement waits for the old pod to be gone.
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "Ignore" and rule["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]
    assert spec["podReplacementPolicy"] == "Failed" and pod["restartPolicy"] == "Never"
    # Checkpoints on the shared claim: the working directory is its mount, the claim is ReadWriteMany.
    claim = _doc(rendered, "training/pvc.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    vol = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert vol["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == vol["name"])
    assert c["workingDir"] == mount["mountPath"] == tr.workspace_mount
    # Like the serving pods: non-root, read-only root fs with /tmp an emptyDir, all capabilities dropped.
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert any("emptyDir" in v for v in pod["volumes"])
    assert pod["terminationGracePeriodSeconds"] > 30  # torchrun gives workers 30 s after SIGTERM


def test_requests_come_from_the_measured_throughput(rendered, params):
    sz = train_sizing(params, train_report(), weights_mib=30.0)
    c = _doc(rendered, "training/job.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": f"{sz.cpu_m}m",
                                                                        "memory": f"{sz.memory_mib}Mi"}  # fmt: skip
    tr = params.deploy.training
    assert c["args"][c["args"].index("--threads") + 1] == str(tr.nproc_per_node * sz.threads_per_process)
    assert sz.source.startswith("measured")


def test_sizing_meets_the_target_with_the_fewest_threads(params):
    p = _with(params, target_minutes=1.0, max_threads_per_process=64)
    rep = train_report()
    sz = train_sizing(p, rep)
    tr = p.deploy.training
    assert sz.predicted_s is not None and sz.predicted_s <= tr.target_minutes * 60
    # One thread fewer per process would miss the target: the request is the least that meets it.
    assert sz.predicted_s * sz.threads_per_process / (sz.threads_per_process - 1) > tr.target_minutes * 60
    assert sz.cpu_m == tr.nproc_per_node * sz.threads_per_process * 1000
    # Twice the measured speed per core needs about half the cores; a generous target needs one thread.
    assert train_sizing(p, train_report(samples_per_s=93.6, train_s=85.5)).threads_per_process == math.ceil(
        sz.threads_per_process / 2
    )
    assert train_sizing(_with(p, target_minutes=600.0), rep).threads_per_process == 1
    # Capped at the ceiling; without a measurement the ceiling is used and the deadline has its floor.
    assert train_sizing(_with(p, max_threads_per_process=2), rep).threads_per_process == 2
    none = train_sizing(p, None)
    assert none.threads_per_process == 64 and none.predicted_s is None and none.source.startswith("defaults")
    assert sz.deadline_s >= 600 and none.deadline_s >= tr.target_minutes * 60 * tr.deadline_factor


def test_memory_grows_with_the_model_and_processes(params):
    small, big = train_sizing(params, None, weights_mib=10.0), train_sizing(params, None, weights_mib=500.0)
    assert big.memory_mib - small.memory_mib >= 4 * 490 * params.deploy.headroom - 64  # weights, grads, 2 moments
    two = train_sizing(_with(params, nproc_per_node=2), None, weights_mib=10.0)
    assert two.memory_mib >= 2 * small.memory_mib - 64 and two.cpu_m == 2 * small.cpu_m
    assert any("resumed" in n for n in train_sizing(params, train_report(resumed=100)).notes)


def test_more_nodes_change_the_job_and_command(params):
    docs = build_manifests(_with(params, nnodes=4, nproc_per_node=2), None, train_report())
    job = docs["training/job.yaml"]
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--nnodes") + 1] == "4" and args[args.index("--nproc-per-node") + 1] == "2"
    assert "--node-rank" not in args  # c10d assigns ranks; torchrun ignores (and warns about) --node-rank


def test_training_manifests_pass_strict_schema_and_checkov(rendered, tmp_path):
    exe = find_checkov(ROOT)
    # Only the training set: the other sets have their own checks in test_deploy_manifests.
    only = tmp_path / "training"
    only.mkdir()
    for rel in sorted(TRAINING_FILES):
        (only / Path(rel).name).write_text((rendered / rel).read_text())
    rep = validate_dir(only, K8S_VERSION, checkov=exe is not None, root=ROOT)
    assert all(not r["errors"] for r in rep.schema), rep.lines()
    assert {r["kind"] for r in rep.schema} == {"Job", "Service", "PersistentVolumeClaim", "NetworkPolicy"}
    if exe is None:
        pytest.skip("checkov not installed: run scripts/tools.sh to create .tools/checkov (CI has it); schema passed")
    assert rep.checkov is not None and rep.checkov.ok, rep.lines()
    assert rep.checkov.passed > 50 and {s["check"] for s in rep.checkov.skipped} == {"CKV_K8S_43"}
