# Dependencies.cmake: everything comes from Debian's packages (scripts/install_deps.sh), either
# installed in the system or unpacked under a prefix named in CMAKE_PREFIX_PATH (the GPU
# machine's: scripts/gpu_deps.sh, docs/gpu_run.md). So nothing here may rely on a package's
# files sitting under /usr: libraries and headers are found by name through the prefixes.
# OpenBLAS (OpenMP flavour, so BLAS inside our parallel regions stays single-threaded),
# OpenMP, nlohmann-json, toml++, CLI11, PCRE2 (the GPT-2 pre-tokenizer), GoogleTest, Gloo, and
# cairo (optional: `loom plot`).
find_package(OpenMP REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(tomlplusplus 3 REQUIRED)
find_package(CLI11 REQUIRED)

# OpenBLAS: Debian keeps each flavour in <libdir>/openblas-<flavour>; the OpenMP one is looked
# for there under every prefix first, then any libopenblas.
set(_loom_prefixes ${CMAKE_PREFIX_PATH} $ENV{CMAKE_PREFIX_PATH} /usr)
string(REPLACE ":" ";" _loom_prefixes "${_loom_prefixes}")
set(_loom_openblas_dirs "")
foreach(p IN LISTS _loom_prefixes)
  if(p)
    list(APPEND _loom_openblas_dirs ${p}/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp ${p}/lib/openblas-openmp)
  endif()
endforeach()
find_path(OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas openblas-openmp x86_64-linux-gnu/openblas-openmp)
find_library(OPENBLAS_LIBRARY NAMES blas PATHS ${_loom_openblas_dirs} NO_DEFAULT_PATH)
if(NOT OPENBLAS_LIBRARY)
  find_library(OPENBLAS_LIBRARY NAMES openblas)
endif()
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: run scripts/install_deps.sh (apt package libopenblas-openmp-dev)")
endif()
add_library(loom_blas INTERFACE)
target_include_directories(loom_blas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(loom_blas INTERFACE ${OPENBLAS_LIBRARY})

# PCRE2 (8-bit code units): through pkg-config where there is one, else by its header and
# library (a machine without pkg-config, or a prefix whose .pc files would say /usr).
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(PCRE2 QUIET IMPORTED_TARGET libpcre2-8)
endif()
add_library(loom_pcre2 INTERFACE)
if(TARGET PkgConfig::PCRE2)
  target_link_libraries(loom_pcre2 INTERFACE PkgConfig::PCRE2)
else()
  find_path(PCRE2_INCLUDE_DIR pcre2.h)
  find_library(PCRE2_LIBRARY NAMES pcre2-8)
  if(NOT PCRE2_INCLUDE_DIR OR NOT PCRE2_LIBRARY)
    message(FATAL_ERROR "PCRE2 not found: run scripts/install_deps.sh (apt package libpcre2-dev)")
  endif()
  target_include_directories(loom_pcre2 INTERFACE ${PCRE2_INCLUDE_DIR})
  target_link_libraries(loom_pcre2 INTERFACE ${PCRE2_LIBRARY})
endif()

# cairo (optional): draws `loom plot`'s pictures (launch/run/plot.cpp). Without it loom still
# builds, and `loom plot` says what to install (exit 2).
if(PKG_CONFIG_FOUND)
  pkg_check_modules(CAIRO QUIET IMPORTED_TARGET cairo)
endif()
if(NOT TARGET PkgConfig::CAIRO)
  message(STATUS "cairo not found: `loom plot` will ask for it (apt package libcairo2-dev)")
endif()

# Gloo: the CPU collectives of data-parallel runs on CPU ranks (engine/comm/gloo_comm.cpp).
# Not in a GPU-only build (LOOM_GPU_ONLY): there a multi-rank cpu run says that it needs Gloo.
# Found by header and library, not through Debian's GlooTargets, whose library path is
# hard-coded (/usr/lib/libgloo.so.0.5.0) and so fails under any other prefix.
if(LOOM_GPU_ONLY)
  message(STATUS "Gloo: not used by a GPU-only build (multi-rank cpu runs are unavailable)")
else()
  find_path(GLOO_INCLUDE_DIR gloo/config.h)
  find_library(GLOO_LIBRARY NAMES gloo)
  if(NOT GLOO_INCLUDE_DIR OR NOT GLOO_LIBRARY)
    message(FATAL_ERROR "Gloo not found: run scripts/install_deps.sh (apt package libgloo-dev)")
  endif()
  add_library(gloo SHARED IMPORTED)
  set_target_properties(gloo PROPERTIES IMPORTED_LOCATION ${GLOO_LIBRARY}
                        INTERFACE_INCLUDE_DIRECTORIES ${GLOO_INCLUDE_DIR})
endif()

if(LOOM_TESTS)
  find_package(GTest REQUIRED)
endif()

# Protocol buffers (TensorBoard event files: launch/run/tensorboard.cpp, its .proto compiled by
# protoc; scripts/install_deps.sh installs them). Optional: a build without them (a GPU-only
# build whose prefix lacks them, or a machine without the packages) writes no event files and
# says so here and at the start of each run (launch/run/tensorboard_none.cpp).
# protoc runs at build time: from a prefix (the GPU machine's) it needs the loader pointed at
# the prefix's libraries, so it is tried here, and a protoc that cannot run counts as none.
find_package(Protobuf QUIET)
set(_loom_protoc_runs FALSE)
if(Protobuf_FOUND AND Protobuf_PROTOC_EXECUTABLE)
  execute_process(COMMAND ${Protobuf_PROTOC_EXECUTABLE} --version RESULT_VARIABLE _loom_protoc_rc
                  OUTPUT_QUIET ERROR_QUIET)
  if(_loom_protoc_rc EQUAL 0)
    set(_loom_protoc_runs TRUE)
  endif()
endif()
if(_loom_protoc_runs AND TARGET protobuf::libprotobuf)
  set(LOOM_TENSORBOARD ON)
  message(STATUS "TensorBoard event files: protobuf ${Protobuf_VERSION}, ${Protobuf_PROTOC_EXECUTABLE}")
else()
  set(LOOM_TENSORBOARD OFF)
  message(STATUS "TensorBoard event files: off (no protobuf found; apt packages libprotobuf-dev, protobuf-compiler)")
endif()
