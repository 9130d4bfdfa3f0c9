"""Prefect flows of winback: campaign, dispatch and measure — orchestration only."""
