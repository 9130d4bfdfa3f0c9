"""deployments/prefect.yaml: every entrypoint imports, its parameters validate, schedules are well formed."""

from __future__ import annotations

import pytest
from flows.serve import PREFECT_YAML, load_deployment_specs, load_entrypoint, runner_deployments

SPECS = load_deployment_specs(PREFECT_YAML)


def test_yaml_has_campaign_dispatch_and_measure_deployments():
    flows = {spec["entrypoint"] for spec in SPECS}
    assert flows == {
        "flows/campaign.py:campaign_flow",
        "flows/dispatch.py:dispatch_flow",
        "flows/measure.py:measure_flow",
    }
    for spec in SPECS:
        assert spec["work_pool"]["name"] == "winback"
        assert spec["schedules"], f"{spec['name']} has no schedule"


@pytest.mark.parametrize("spec", SPECS, ids=[s["name"] for s in SPECS])
def test_entrypoint_imports_and_parameters_validate(spec):
    flow = load_entrypoint(spec["entrypoint"])
    params = spec.get("parameters") or {}
    validated = flow.validate_parameters(params)
    assert set(params) <= set(validated)


def test_unknown_parameter_is_rejected():
    flow = load_entrypoint("flows/campaign.py:campaign_flow")
    with pytest.raises(Exception, match="no_such_parameter|unexpected"):
        flow.validate_parameters({"campaign": "x.yaml", "no_such_parameter": 1})


def test_runner_deployments_build_with_schedules():
    deployments = runner_deployments(PREFECT_YAML)
    assert len(deployments) == len(SPECS)
    by_name = {d.name: d for d in deployments}
    daily = by_name["cn-retail-daily"]
    assert daily.schedules and daily.schedules[0].schedule.timezone == "Asia/Shanghai"
    assert daily.parameters["campaign"].endswith(".yaml")
