"""The real-time edge: an event collector and a send-time personalization API (FastAPI + uvicorn).

They are services, not Dagster definitions: the collector feeds the landing zone the batch graph
reads, and the API reads the serving snapshot the graph writes (`defs/serving/`).
"""
