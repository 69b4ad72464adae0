"""The cost model's settings as one typed model (a later CostParams feeds it), with the defaults the issue names.
Figures that are assumptions rather than measurements say so in their comment and in the report's `assumptions`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kit.cost.traffic import TrafficProfile

__all__ = ["CostSettings", "ASSUMPTIONS"]

# Stated in the report beside the figures they move.
ASSUMPTIONS = {
    "platform_start_s": "Kubernetes adds scheduling + container start (image cached on the node) to the measured "
    "process start; not measured here",
    "function_init_s": "a serverless function's sandbox + runtime init before the model loads; not measured here",
    "function_keepalive_s": "how long an idle function instance stays warm (providers do not publish it)",
    "checkpoint_write_s": "used only when reports/train.json records no train.checkpoint_write_s",
    "restart_s": "spot replacement: a new instance, the image, the resume from the last checkpoint",
    "apply_free_tier": "the function free tier is per account and often used by other functions",
}


class CostSettings(BaseModel):
    """Everything the cost model takes besides the reports and the price sheet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    traffic: TrafficProfile = TrafficProfile()
    instance: str = "c7a.large"  # price-sheet row serving runs on (nearest to the measured AMD EPYC, 2 vCPU)
    training_instance: str = "c7a.large"
    function: str = "aws-lambda-x86-1769mb"
    scale_to_zero: str = "knative-default"
    min_replicas: int = Field(default=2, ge=1)  # always-on and HPA floor (params deploy.min_replicas)
    max_replicas: int = Field(default=50, ge=1)
    spot_on_demand_floor: int = Field(default=1, ge=0)  # pods kept on on-demand in the spot option
    target_utilization: float = Field(default=0.7, gt=0, le=1)  # params deploy.cpu_target_percent
    hpa_sync_s: float = Field(default=15.0, gt=0)  # Kubernetes HPA sync period
    hpa_window_s: float = Field(default=60.0, gt=0)
    hpa_downscale_s: float = Field(default=300.0, ge=0)  # HPA scale-down stabilization window
    kpa_tick_s: float = Field(default=2.0, gt=0)  # Knative autoscaler tick
    platform_start_s: float = Field(default=2.0, ge=0)  # assumption (ASSUMPTIONS)
    function_init_s: float = Field(default=1.0, ge=0)  # assumption
    function_keepalive_s: float = Field(default=600.0, gt=0)  # assumption
    apply_free_tier: bool = False  # assumption
    batch_start_s: float = Field(default=60.0, ge=0)  # a Job's pod start + model load, billed
    batch_window_h: float = Field(default=6.0, gt=0)  # the nightly Job must finish within this
    hours_per_month: float = Field(default=730.0, gt=0)  # the clouds' billing month
    checkpoint_write_s: float = Field(default=3.0, gt=0)  # assumption (ASSUMPTIONS)
    checkpoint_every_steps: int = Field(default=50, gt=0)  # params finetune.save_steps
    restart_s: float = Field(default=180.0, ge=0)  # assumption
    sim_max_arrivals: int = Field(default=100_000, ge=1_000)
    curve_min_per_day: float = Field(default=1e2, gt=0)
    curve_max_per_day: float = Field(default=1e8, gt=0)
    curve_points: int = Field(default=13, ge=3)
    curve_max_arrivals: int = Field(default=20_000, ge=1_000)
    seed: int = 0

    def with_requests(self, requests_per_day: float) -> CostSettings:
        """The same settings at another daily volume (break-even curves)."""
        traffic = self.traffic.model_copy(update={"requests_per_day": requests_per_day})
        return self.model_copy(update={"traffic": traffic})
