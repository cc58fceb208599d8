"""The node vocabulary of the SQL walk: which sqlglot nodes and functions a read may use.

``token_guard.core.sql`` walks a parsed query and asks ``classify`` what each node's type is to
it; the sets here are the whole answer. A node type named nowhere here (and neither a
function nor a condition) is refused, so a sqlglot upgrade that adds node types fails
closed. Names missing from the installed sqlglot are skipped (``hasattr``).
"""

from __future__ import annotations

from sqlglot import exp

__all__ = [
    "ALLOW",
    "DEFAULT_ALLOWED_FUNCTIONS",
    "DENIED_FUNCTIONS",
    "DENY",
    "FUNCTION",
    "NAMED_FUNCTIONS",
    "ROW_SOURCES",
    "STATEMENT_WORDS",
    "STRUCTURE",
    "TABLE",
    "classify",
]

# What the walk does with a node, by its type (``classify``): walk it; resolve it as a
# table reference; check the function's name against ``allowed_functions``; refuse it.
ALLOW = 0
TABLE = 1
FUNCTION = 2
DENY = 3

# Read-only spatial functions sqlglot parses as unknown ("Anonymous") calls. Functions that
# take a table or a URI (PostGIS ST_EstimatedExtent, BigQuery ST_REGIONSTATS) are left out
# on purpose: they read data no grant names.
DEFAULT_ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    {
        "st_area", "st_asbinary", "st_asgeojson", "st_asmvt", "st_asmvtgeom", "st_astext",
        "st_aswkb", "st_aswkt", "st_boundary", "st_buffer", "st_centroid",
        "st_closestpoint", "st_clusterdbscan", "st_collect", "st_contains", "st_convexhull",
        "st_coveredby", "st_covers", "st_difference", "st_dimension", "st_disjoint",
        "st_distance", "st_dwithin", "st_endpoint", "st_envelope", "st_equals", "st_extent",
        "st_geogfrom", "st_geogfromgeojson", "st_geogfromtext", "st_geogfromwkb",
        "st_geogpoint", "st_geogpointfromgeohash", "st_geographyfromtext", "st_geohash",
        "st_geometrytype", "st_geomfromgeojson", "st_geomfromtext", "st_geomfromwkb",
        "st_intersection", "st_intersects", "st_intersectsbox", "st_isclosed", "st_isempty",
        "st_isvalid", "st_length", "st_makeenvelope", "st_makeline", "st_makepoint",
        "st_makepolygon", "st_maxdistance", "st_npoints", "st_numpoints", "st_perimeter",
        "st_point", "st_pointn", "st_setsrid", "st_simplify", "st_snaptogrid", "st_srid",
        "st_startpoint", "st_tileenvelope", "st_touches", "st_transform", "st_union",
        "st_union_agg", "st_within", "st_x", "st_xmax", "st_xmin", "st_y", "st_ymax",
        "st_ymin", "to_geography", "to_geometry", "try_to_geography", "h3_latlng_to_cell",
        "h3_latlng_to_cell_string", "h3_cell_to_boundary", "h3_cell_to_parent",
        "h3_cell_to_children", "h3_int_to_string", "h3_string_to_int",
        "h3_polygon_to_cells", "h3_point_to_cell", "h3_point_to_cell_string",
    }
)

# Known sqlglot functions that reach outside the query: models, AI services, files,
# sequences (a write), dynamic names.
DENIED_FUNCTIONS: tuple[type[exp.Expression], ...] = tuple(
    getattr(exp, name)
    for name in (
        "AIAgg", "AIClassify", "AIEmbed", "AIForecast", "AIGenerate", "AISimilarity",
        "AISummarizeAgg", "DynamicIdentifier", "FeaturesAtTime", "GapFill", "GenerateBool",
        "GenerateDouble", "GenerateEmbedding", "GenerateInt", "GenerateTable", "GenerateText",
        "MLForecast", "MLTranslate", "NextValueFor", "Predict", "ReadCSV", "ReadParquet",
        "Secret", "ToFile", "VectorSearch",
    )
    if hasattr(exp, name)
)

# Functions sqlglot does not know: checked against the allow-list by name.
NAMED_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Anonymous,
    exp.AnonymousAggFunc,
    exp.CombinedAggFunc,
    exp.ParameterizedAgg,
    exp.CombinedParameterizedAgg,
)

# Clause and structure nodes of a plain read. Func and Condition subclasses are handled
# by kind in ``classify``; everything not listed here is refused.
STRUCTURE: frozenset[type[exp.Expression]] = frozenset(
    getattr(exp, name)
    for name in (
        "Alias", "Aliases", "AtTimeZone", "CTE", "CharacterSet", "Cluster", "ColumnDef",
        "Connect",
        "Cube", "DataType", "DataTypeParam", "Distinct", "Distribute", "Except", "Fetch",
        "Filter", "FormatJson", "From", "FromTimeZone", "Group", "GroupingSets", "Having",
        "HavingMax", "HistoricalData", "Identifier", "IgnoreNulls", "Intersect", "Interval",
        "IntervalSpan", "Introducer", "JSONColumnDef", "JSONKeyValue", "JSONPath", "JSONPathFilter",
        "JSONPathKey", "JSONPathPart", "JSONPathRecursive", "JSONPathRoot",
        "JSONPathSelector", "JSONPathSlice", "JSONPathSubscript", "JSONPathUnion",
        "JSONPathWildcard", "JSONSchema", "Join", "Lambda", "Lateral", "Limit",
        "LimitOptions", "MatchRecognize", "MatchRecognizeMeasure", "National", "Offset",
        "Order", "Ordered", "Pivot", "PivotAlias", "PivotAny", "Prior", "PseudoType",
        "ObjectIdentifier", "Qualify", "RecursiveWithSearch", "RespectNulls", "Rollup",
        "Select", "Slice", "Sort", "Star", "Subquery", "Table", "TableAlias", "TableColumn",
        "TableFromRows", "TableSample", "Tuple", "Union", "Values", "Var", "Version",
        "Where", "WindowSpec", "With", "WithinGroup",
    )
    if hasattr(exp, name)
)

# Statement nodes, named in refusals so people see what was wrong.
STATEMENT_WORDS: dict[str, str] = {
    "Insert": "INSERT", "Update": "UPDATE", "Delete": "DELETE", "Merge": "MERGE",
    "Create": "CREATE", "Drop": "DROP", "Alter": "ALTER", "Copy": "COPY", "Set": "SET",
    "Use": "USE", "Transaction": "BEGIN", "Commit": "COMMIT", "Rollback": "ROLLBACK",
    "Grant": "GRANT", "Revoke": "REVOKE", "Declare": "DECLARE", "Execute": "EXECUTE",
    "ExecuteSql": "EXECUTE", "Export": "EXPORT DATA", "TruncateTable": "TRUNCATE",
    "Describe": "DESCRIBE", "Show": "SHOW", "Pragma": "PRAGMA", "Cache": "CACHE",
    "Uncache": "UNCACHE", "LoadData": "LOAD DATA", "Put": "PUT", "Get": "GET",
    "Kill": "KILL", "Analyze": "ANALYZE", "Refresh": "REFRESH", "Attach": "ATTACH",
    "Detach": "DETACH", "Install": "INSTALL", "Summarize": "SUMMARIZE", "Values": "VALUES",
    "StoredProcedure": "CALL", "Block": "a script block",
}

# Table sources that are functions over values, never over named tables.
ROW_SOURCES: tuple[type[exp.Expression], ...] = (exp.Unnest, exp.Explode)

def classify(kind: type[exp.Expression]) -> int:
    """How the walk treats a node of this type: ALLOW, TABLE, FUNCTION or DENY."""
    if kind is exp.Table:
        return TABLE
    if issubclass(kind, NAMED_FUNCTIONS):
        return FUNCTION
    if issubclass(kind, DENIED_FUNCTIONS):
        return DENY
    if issubclass(kind, exp.Func):
        return ALLOW
    if issubclass(kind, exp.Condition) and not issubclass(kind, exp.Operator):
        return ALLOW
    if kind in STRUCTURE:
        return ALLOW
    return DENY

