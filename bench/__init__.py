"""In-process WSGI benchmark: workflowhttp against a raw WSGI floor, Flask and Falcon."""
