"""The editor endpoint: routes per protocol, request validation, the generation queue, the load test."""
