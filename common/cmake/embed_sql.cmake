# Turn every sql/*.sql file into a C array so that libupmon (and every binary
# linking it) carries the schema it was built with.
#   cmake -DSQL_DIR=<dir> -DOUT=<file.c> -P embed_sql.cmake
# Every *.sql file is embedded, whatever its name: the loader rejects badly
# named ones, so a mistake fails loudly instead of being skipped here.
file(GLOB files RELATIVE ${SQL_DIR} ${SQL_DIR}/*.sql)
list(SORT files)
set(body "/* Generated from sql/ by common/cmake/embed_sql.cmake; do not edit. */\n")
string(APPEND body "#include \"upmon/schema.h\"\n\n")
set(table "")
set(i 0)
foreach(f IN LISTS files)
  file(READ ${SQL_DIR}/${f} hex HEX)
  file(SIZE ${SQL_DIR}/${f} size)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(APPEND body "static const unsigned char sql_${i}[] = {\n    ${hex}0x00};\n")
  string(APPEND table "    {\"${f}\", (const char *)sql_${i}, ${size}},\n")
  math(EXPR i "${i} + 1")
endforeach()
if(i EQUAL 0)
  # Keep the array non-empty for C; the count says there is nothing.
  string(APPEND body "const struct upm_schema_source upm_schema_embedded[] = {{0, 0, 0}};\n")
else()
  string(APPEND body "const struct upm_schema_source upm_schema_embedded[] = {\n${table}};\n")
endif()
string(APPEND body "const size_t upm_schema_embedded_count = ${i};\n")
# Write only on change so that an unchanged schema does not rebuild anything.
set(old "")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL body)
  file(WRITE ${OUT} "${body}")
endif()
