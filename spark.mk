# The Spark engine (issue #14): a standalone master and two workers on 127.0.0.1, started from
# the Spark distribution inside the `pyspark` package. Pids, logs, table files and the Hive
# metastore live under data/spark/ (PERSONALIZATION_SPARK_DIR). The Makefile includes this file;
# on its own: `make -f spark.mk spark-up`.
#
#   make spark-up        start (checks for java; installs openjdk-17-jre-headless if missing)
#   make spark-status    which daemons run (exit 3 when none)
#   make spark-down      stop workers, then the master (SIGTERM, SIGKILL after 30 s)
#   make demo ENGINE=spark   the whole graph with the dbt project on Spark

SPARK_PY ?= .venv/bin/python
SPARK_CLUSTER := $(SPARK_PY) scripts/spark_cluster.py
SPARK_ARGS ?=
# The Makefile sets this to `setup` before including this file, so the venv exists first.
SPARK_DEPS ?=
ENGINE ?= $(or $(PERSONALIZATION_ENGINE),duckdb)
export PERSONALIZATION_ENGINE := $(ENGINE)
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: spark-up spark-down spark-status spark-export-raw

spark-up: $(SPARK_DEPS) ## start the local Spark cluster: master spark://127.0.0.1:7077, 2 workers
	$(SPARK_CLUSTER) up $(SPARK_ARGS)

spark-down: ## stop the local Spark cluster
	$(SPARK_CLUSTER) down

spark-status: ## show the local Spark daemons
	@$(SPARK_CLUSTER) status || true

spark-export-raw: $(SPARK_DEPS) ## copy DuckDB's raw.* tables to data/spark/raw (the Spark sources)
	$(SPARK_CLUSTER) export-raw
