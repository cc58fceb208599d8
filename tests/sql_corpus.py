"""Queries with what the guard must conclude: the tables they read, or why they are refused.

Each entry is ``(id, connection, query, expected)``: ``expected`` is a set of table keys
for an allowed query, or a string that the refusal's ``reason`` must contain.
"""

from __future__ import annotations

from token_guard.core.connections import Connection

BQ = Connection("bigquery")
BQD = Connection("bigquery", default_path=("carto-demo-data", "demo_tables"))
PG = Connection("postgres", default_path=("app", "public"))
SF = Connection("snowflake", default_path=("DB", "PUBLIC"))
DUCK = Connection("duckdb", default_path=("db", "main"))
DBX = Connection("databricks", default_path=("main", "default"))

Expected = set[tuple[str, ...]] | str

RS = ("carto-demo-data", "demo_tables", "retail_stores")
P = ("proj", "ds")

CORPUS: list[tuple[str, Connection, str, Expected]] = [
    # --- BigQuery: allowed -------------------------------------------------------------
    ("bq-dashes", BQ, "SELECT * FROM carto-demo-data.demo_tables.retail_stores", {RS}),
    ("bq-backtick-path", BQ, "SELECT * FROM `carto-demo-data.demo_tables.retail_stores`", {RS}),
    (
        "bq-backtick-parts",
        BQ,
        "SELECT * FROM `carto-demo-data`.`demo_tables`.`retail_stores`",
        {RS},
    ),
    ("bq-mixed-quoting", BQ, "SELECT * FROM `carto-demo-data`.demo_tables.retail_stores", {RS}),
    ("bq-project-case", BQ, "SELECT * FROM Carto-Demo-Data.demo_tables.retail_stores", {RS}),
    ("bq-table-case-kept", BQ, "SELECT * FROM proj.ds.Stores", {(*P, "Stores")}),
    ("bq-default-path", BQD, "SELECT * FROM retail_stores", {RS}),
    (
        "bq-default-project",
        BQD,
        "SELECT * FROM other_ds.t",
        {("carto-demo-data", "other_ds", "t")},
    ),
    (
        "bq-three-way-join",
        BQ,
        "SELECT a.x, b.y, c.z FROM proj.ds.a AS a JOIN proj.ds.b AS b ON a.id = b.id "
        "LEFT JOIN proj.ds.c AS c ON c.id = b.id WHERE a.city = @city",
        {(*P, "a"), (*P, "b"), (*P, "c")},
    ),
    (
        "bq-scalar-subquery",
        BQ,
        "SELECT x, (SELECT MAX(y) FROM proj.ds.b) AS m FROM proj.ds.a",
        {(*P, "a"), (*P, "b")},
    ),
    (
        "bq-exists",
        BQ,
        "SELECT * FROM proj.ds.a WHERE EXISTS (SELECT 1 FROM proj.ds.b WHERE b.id = a.id)",
        {(*P, "a"), (*P, "b")},
    ),
    (
        "bq-set-operations",
        BQ,
        "SELECT id FROM proj.ds.a UNION ALL SELECT id FROM proj.ds.b "
        "EXCEPT DISTINCT SELECT id FROM proj.ds.c",
        {(*P, "a"), (*P, "b"), (*P, "c")},
    ),
    (
        "bq-cte-reads-body",
        BQ,
        "WITH t AS (SELECT * FROM proj.ds.secret) SELECT * FROM t",
        {(*P, "secret")},
    ),
    (
        "bq-cte-does-not-hide-qualified",
        BQ,
        "WITH t AS (SELECT 1 AS x) SELECT * FROM t JOIN proj.ds.t USING (x)",
        {(*P, "t")},
    ),
    (
        "bq-cte-self-name-is-table",
        BQD,
        "WITH retail_stores AS (SELECT * FROM retail_stores) SELECT * FROM retail_stores",
        {RS},
    ),
    (
        # A CTE matches only as written: a name differing in case is read as a table
        # (over-asking is safe; sqlglot's case-insensitive match could under-ask).
        "bq-cte-case-differs-is-a-table",
        BQD,
        "WITH Stores AS (SELECT * FROM proj.ds.a) SELECT * FROM stores",
        {(*P, "a"), ("carto-demo-data", "demo_tables", "stores")},
    ),
    (
        "bq-nested-cte",
        BQ,
        "WITH a AS (WITH b AS (SELECT * FROM proj.ds.inner_t) SELECT * FROM b) SELECT * FROM a",
        {(*P, "inner_t")},
    ),
    (
        "bq-cte-scope-ends",
        BQD,
        "SELECT * FROM (WITH t AS (SELECT 1 AS x) SELECT * FROM t) AS s, t",
        {("carto-demo-data", "demo_tables", "t")},
    ),
    (
        "bq-forward-cte-is-table",
        BQD,
        "WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a",
        {("carto-demo-data", "demo_tables", "b")},
    ),
    (
        "bq-recursive-cte",
        BQ,
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT * FROM r JOIN proj.ds.a ON a.n = r.n",
        {(*P, "a")},
    ),
    ("bq-unnest-literal", BQ, "SELECT x FROM UNNEST([1, 2, 3]) AS x", set()),
    (
        "bq-unnest-column",
        BQ,
        "SELECT t.id, tag FROM proj.ds.t AS t, UNNEST(t.tags) AS tag",
        {(*P, "t")},
    ),
    (
        "bq-implicit-unnest",
        BQ,
        "SELECT * FROM proj.ds.t AS t, t.tags AS tag",
        {(*P, "t")},
    ),
    (
        "bq-unnest-hides-subquery",
        BQ,
        "SELECT x FROM UNNEST((SELECT ARRAY_AGG(v) FROM proj.ds.secret)) AS x",
        {(*P, "secret")},
    ),
    (
        "bq-time-travel",
        BQ,
        "SELECT * FROM proj.ds.t FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01 00:00:00'",
        {(*P, "t")},
    ),
    (
        "bq-string-literal-sql",
        BQ,
        "SELECT 'SELECT * FROM proj.ds.secret' AS q FROM proj.ds.t",
        {(*P, "t")},
    ),
    (
        "bq-comment-hides-statement",
        BQ,
        "SELECT * FROM proj.ds.t /* ; DROP TABLE proj.ds.t */ -- ; DELETE FROM x",
        {(*P, "t")},
    ),
    (
        "bq-spatial",
        BQ,
        "SELECT ST_ASGEOJSON(geom), ST_X(ST_CENTROID(geom)) FROM proj.ds.t "
        "WHERE ST_INTERSECTS(geom, ST_GEOGPOINT(@lng, @lat))",
        {(*P, "t")},
    ),
    (
        "bq-pivot",
        BQ,
        "SELECT * FROM proj.ds.sales PIVOT (SUM(amount) FOR quarter IN ('Q1', 'Q2'))",
        {(*P, "sales")},
    ),
    (
        "bq-window-qualify",
        BQ,
        "SELECT id, ROW_NUMBER() OVER (PARTITION BY city ORDER BY ts) AS rn "
        "FROM proj.ds.t QUALIFY rn = 1",
        {(*P, "t")},
    ),
    (
        "bq-information-schema-exact",
        BQ,
        "SELECT table_name FROM proj.ds.INFORMATION_SCHEMA.TABLES",
        {(*P, "INFORMATION_SCHEMA.TABLES")},
    ),
    ("bq-trailing-semicolon", BQ, "SELECT * FROM proj.ds.t;", {(*P, "t")}),
    # --- BigQuery: refused -------------------------------------------------------------
    ("bq-unqualified", BQ, "SELECT * FROM retail_stores", "not fully qualified"),
    ("bq-dataset-only", BQ, "SELECT * FROM demo_tables.retail_stores", "not fully qualified"),
    ("bq-four-parts", BQ, "SELECT * FROM a.b.c.d", "more than 3 parts"),
    ("bq-wildcard-table", BQ, "SELECT * FROM proj.ds.events_*", "wildcard table"),
    (
        "bq-wildcard-suffix",
        BQ,
        "SELECT * FROM `proj.ds.events_*` WHERE _TABLE_SUFFIX = '2024'",
        "wildcard table",
    ),
    (
        "bq-external-query",
        BQ,
        "SELECT * FROM EXTERNAL_QUERY('proj.us.conn', 'SELECT * FROM secret')",
        "EXTERNAL_QUERY",
    ),
    (
        "bq-ml-predict",
        BQ,
        "SELECT * FROM ML.PREDICT(MODEL proj.ds.m, TABLE proj.ds.t)",
        "table function",
    ),
    (
        "bq-udf-unlisted",
        BQ,
        "SELECT `carto-un`.carto.H3_BOUNDARY(h3) FROM proj.ds.t",
        "H3_BOUNDARY",
    ),
    ("bq-two-statements", BQ, "SELECT 1; SELECT * FROM proj.ds.t", "2 statements"),
    ("bq-execute-immediate", BQ, "EXECUTE IMMEDIATE 'SELECT * FROM proj.ds.secret'", "EXECUTE"),
    ("bq-insert", BQ, "INSERT INTO proj.ds.t (x) VALUES (1)", "INSERT"),
    ("bq-delete", BQ, "DELETE FROM proj.ds.t WHERE TRUE", "DELETE"),
    (
        "bq-merge",
        BQ,
        "MERGE proj.ds.t USING proj.ds.s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE",
    ),
    ("bq-create-as", BQ, "CREATE TABLE proj.ds.copy AS SELECT * FROM proj.ds.t", "CREATE"),
    ("bq-drop", BQ, "DROP TABLE proj.ds.t", "DROP"),
    ("bq-declare", BQ, "DECLARE x INT64 DEFAULT 1", "DECLARE"),
    ("bq-set", BQ, "SET @@dataset_id = 'secret'", "SET"),
    ("bq-call", BQ, "CALL proj.ds.proc()", "CALL"),
    (
        "bq-export-data",
        BQ,
        "EXPORT DATA OPTIONS (uri = 'gs://b/*.csv', format = 'CSV') AS SELECT * FROM proj.ds.t",
        "EXPORT",
    ),
    ("bq-begin", BQ, "BEGIN TRANSACTION", "BEGIN"),
    ("bq-parse-error", BQ, "SELECT * FROM WHERE", "does not parse"),
    ("bq-empty", BQ, "  -- nothing\n", "empty"),
    ("bq-meta-tables-unqualified", BQ, "SELECT * FROM ds.__TABLES__", "not fully qualified"),
    # --- PostgreSQL: allowed -----------------------------------------------------------
    ("pg-default-schema", PG, "SELECT * FROM stores", {("app", "public", "stores")}),
    ("pg-schema", PG, "SELECT * FROM geo.stores", {("app", "geo", "stores")}),
    ("pg-fold-lower", PG, "SELECT * FROM Geo.Stores", {("app", "geo", "stores")}),
    ("pg-quoted-kept", PG, 'SELECT * FROM "Geo"."Stores"', {("app", "Geo", "Stores")}),
    (
        "pg-lateral-subquery",
        PG,
        "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.id = a.id) AS x",
        {("app", "public", "a"), ("app", "public", "b")},
    ),
    (
        "pg-unnest",
        PG,
        "SELECT * FROM a CROSS JOIN LATERAL unnest(a.tags) AS tag",
        {("app", "public", "a")},
    ),
    (
        "pg-in-subquery-intersect",
        PG,
        "SELECT * FROM a WHERE id IN (SELECT id FROM b INTERSECT SELECT id FROM c)",
        {("app", "public", "a"), ("app", "public", "b"), ("app", "public", "c")},
    ),
    (
        "pg-cte-quoted-differs",
        PG,
        'WITH "T" AS (SELECT 1) SELECT * FROM t',
        {("app", "public", "t")},
    ),
    ("pg-cte-unquoted-same", PG, 'WITH t AS (SELECT 1) SELECT * FROM "t"', set()),
    ("pg-table-statement", PG, "TABLE stores", {("app", "public", "stores")}),
    (
        "pg-placeholder",
        PG,
        "SELECT * FROM stores WHERE city = :city",
        {("app", "public", "stores")},
    ),
    (
        "pg-postgis",
        PG,
        "SELECT ST_AsMVT(q) FROM (SELECT ST_AsMVTGeom(geom, ST_TileEnvelope(1, 0, 0)) "
        "FROM stores) AS q",
        {("app", "public", "stores")},
    ),
    ("pg-three-parts", PG, "SELECT * FROM app.public.t", {("app", "public", "t")}),
    # --- PostgreSQL: refused -----------------------------------------------------------
    ("pg-for-update", PG, "SELECT * FROM stores FOR UPDATE", "row locks"),
    ("pg-for-share-nested", PG, "SELECT * FROM (SELECT * FROM a FOR SHARE) AS s", "row locks"),
    ("pg-select-into", PG, "SELECT * INTO stolen FROM stores", "INTO"),
    (
        "pg-data-modifying-cte",
        PG,
        "WITH gone AS (DELETE FROM stores RETURNING *) SELECT * FROM gone",
        "DELETE",
    ),
    ("pg-copy", PG, "COPY stores TO '/tmp/stores.csv'", "COPY"),
    (
        "pg-query-to-xml",
        PG,
        "SELECT query_to_xml('SELECT * FROM secret', true, true, '')",
        "query_to_xml",
    ),
    ("pg-read-file", PG, "SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
    ("pg-set-config", PG, "SELECT set_config('search_path', 'secret', false)", "set_config"),
    ("pg-generate-series-source", PG, "SELECT * FROM generate_series(1, 10)", set()),
    (
        "pg-function-source",
        PG,
        "SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)",
        "another database",
    ),
    ("pg-catalog-unqualified", PG, "SELECT * FROM pg_shadow", "system catalog"),
    ("pg-stacked", PG, "SELECT 1; DROP TABLE stores", "2 statements"),
    ("pg-operator", PG, "SELECT * FROM a WHERE x OPERATOR(pg_catalog.=) 1", "Operator"),
    ("pg-nextval", PG, "SELECT nextval('seq')", "nextval"),
    ("pg-too-many-parts", PG, "SELECT * FROM a.b.c.d", "more than 3 parts"),
    # --- Snowflake: allowed ------------------------------------------------------------
    ("sf-fold-upper", SF, "SELECT * FROM stores", {("DB", "PUBLIC", "STORES")}),
    ("sf-qualified", SF, "SELECT * FROM db2.geo.stores", {("DB2", "GEO", "STORES")}),
    ("sf-quoted-kept", SF, 'SELECT * FROM "db2"."Geo".stores', {("db2", "Geo", "STORES")}),
    (
        "sf-flatten",
        SF,
        "SELECT f.value FROM events AS e, LATERAL FLATTEN(input => e.payload) AS f",
        {("DB", "PUBLIC", "EVENTS")},
    ),
    (
        "sf-table-flatten",
        SF,
        "SELECT f.value FROM events AS e, TABLE(FLATTEN(input => e.payload)) AS f",
        {("DB", "PUBLIC", "EVENTS")},
    ),
    (
        "sf-time-travel",
        SF,
        "SELECT * FROM stores AT(TIMESTAMP => '2024-01-01'::timestamp_ltz)",
        {("DB", "PUBLIC", "STORES")},
    ),
    (
        "sf-cte-case",
        SF,
        "WITH Recent AS (SELECT * FROM a) SELECT * FROM RECENT",
        {("DB", "PUBLIC", "A")},
    ),
    (
        "sf-information-schema",
        SF,
        "SELECT * FROM db.information_schema.tables",
        {("DB", "INFORMATION_SCHEMA", "TABLES")},
    ),
    # --- Snowflake: refused ------------------------------------------------------------
    ("sf-stage", SF, "SELECT $1 FROM @my_stage", "stage"),
    ("sf-identifier", SF, "SELECT * FROM IDENTIFIER('secret')", "table function"),
    ("sf-table-function", SF, "SELECT * FROM TABLE(RESULT_SCAN(LAST_QUERY_ID()))", "RESULT_SCAN"),
    ("sf-generator", SF, "SELECT * FROM TABLE(GENERATOR(ROWCOUNT => 10))", "table function"),
    ("sf-system-function", SF, "SELECT SYSTEM$ALLOWLIST()", "SYSTEM$ALLOWLIST"),
    ("sf-get-ddl", SF, "SELECT GET_DDL('table', 'secret')", "GET_DDL"),
    ("sf-unset-call", SF, "CALL proc()", "CALL"),
    ("sf-use", SF, "USE DATABASE other", "USE"),
    ("sf-show", SF, "SHOW TABLES", "SHOW"),
    ("sf-two-statements", SF, "SELECT 1;SELECT 2", "2 statements"),
    # --- file reads dressed as tables ------------------------------------------------
    ("duck-table", DUCK, "SELECT * FROM stores", {("db", "main", "stores")}),
    ("duck-file-literal", DUCK, "SELECT * FROM 'data.csv'", "names a file"),
    ("duck-file-quoted", DUCK, 'SELECT * FROM "/tmp/x.parquet"', "names a file"),
    ("duck-read-parquet", DUCK, "SELECT * FROM read_parquet('x.parquet')", "table function"),
    ("dbx-table", DBX, "SELECT * FROM sales.orders", {("main", "sales", "orders")}),
    ("dbx-file-path", DBX, "SELECT * FROM json.`s3://bucket/x`", "names a file"),
    ("dbx-file-format", DBX, "SELECT * FROM parquet.`/tmp/x`", "names a file"),
]
