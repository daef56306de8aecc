# Writes OUT, a header defining KEOPS_BUILD_ID: a digest of the library's sources (FILES,
# separated by '|'). It is part of the on-disk cache key, so that objects compiled by another
# build of the same version (a fix to code generation, a local change) are never linked.
string(REPLACE "|" ";" files "${FILES}")
list(SORT files)
set(all "")
foreach(f IN LISTS files)
  file(SHA256 "${f}" h)
  string(APPEND all "${h}")
endforeach()
string(SHA256 id "${all}")
string(SUBSTRING "${id}" 0 16 id)
set(text "#define KEOPS_BUILD_ID \"${id}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
