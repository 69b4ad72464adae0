"""The cost model's settings: params.yaml's cost section (kit.core.params.CostParams) as a frozen model.
Figures that are assumptions rather than measurements say so in their comment and in the report's `assumptions`."""

from __future__ import annotations

from pydantic import ConfigDict

from kit.core.params import CostParams

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


class CostSettings(CostParams):
    """Everything the cost model takes besides the reports and the price sheet: params.yaml's cost section (its
    knobs, defaults and bounds are defined once, in kit.core.params.CostParams), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_params(cls, cost: CostParams) -> CostSettings:
        """The settings of a validated params.yaml cost section."""
        return cls.model_validate(cost.model_dump())

    def with_requests(self, requests_per_day: float) -> CostSettings:
        """The same settings at another daily volume (break-even curves)."""
        traffic = self.traffic.model_copy(update={"requests_per_day": requests_per_day})
        return self.model_copy(update={"traffic": traffic})
