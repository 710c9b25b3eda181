# Warnings.cmake: one warning set for every loom target (loom_warnings interface library).
add_library(loom_warnings INTERFACE)
target_compile_options(loom_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -Wno-sign-compare>)
