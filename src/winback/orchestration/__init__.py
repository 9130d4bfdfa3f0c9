"""Running winback's Prefect flows from the command line (`winback run`); the flows live in `flows/`."""
