-- The Prefect server keeps its own state in a database of its own, beside mlc's.
CREATE DATABASE prefect OWNER mlc;
