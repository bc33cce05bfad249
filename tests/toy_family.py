"""A toy objective family for the seam test: plain flow matching sampled while told d = 1/K."""

from ablate.families.flow import FlowBaselineFamily


class FlowToldStepFamily(FlowBaselineFamily):
    name = "flow_told_step"

    def sampler_d(self, objective):
        return None  # told d = 1/K, a level it never trained on

    def cell_label(self, config):
        return "flow_told_step"


FAMILY = FlowToldStepFamily()
