"""The checks of deploy/check, one module per deploy kit, on what common.py shares."""
