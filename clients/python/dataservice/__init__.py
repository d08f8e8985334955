"""Python client of dataservice: generated messages and stubs live in ``dataservice.v1``."""
