# Root conftest: makes the integration fixtures (real Tansu, real milvus-lite) available to every test directory.
pytest_plugins = ["medsearch_dev.testing"]
