"""Small apps that the deployment tests serve under a real gunicorn."""
