# LoomKernel.cmake: loom_add_kernel_family(<family>) builds and tests one kernel family three
# ways (DESIGN.md §4): nvcc for the GPU, g++ with the SIMT emulator, and the emulator again
# under ThreadSanitizer and under AddressSanitizer+UBSan.
#
# A family is a folder kernels/<family>/ holding
#   <family>.h          args structs, ref:: and cuda:: declarations
#   <family>_ref.cpp    CPU reference (built into loom_kernels_ref by kernels/CMakeLists.txt)
#   <family>.cu         kernels + launchers, including kernels/common/cuda_compat.h
#   <family>_test.cpp   GoogleTest tests, written once for emulator and GPU
#   <family>_bench.cu   optional, GPU only
# and it gets
#   loom_kernel_<family>_emu         static library: <family>.cu compiled by g++ + emulator
#   loom_kernel_<family>_emu_tsan    the same, compiled with -fsanitize=thread
#   loom_kernel_<family>_emu_asan    the same, compiled with -fsanitize=address,undefined
#   <family>_emu_test                label "emu"       (+ loom_kernels_ref)
#   <family>_tsan_test               label "sanitize"  (+ loom_kernels_ref_serial: no OpenMP)
#   <family>_asan_test               label "sanitize"  (+ loom_kernels_ref)
# and with LOOM_CUDA (nvcc found)
#   loom_kernel_<family>_cuda        static library: <family>.cu compiled by nvcc, with the
#                                    ptxas resource report (registers, smem, spills) in the log
#   <family>_gpu_test                label "gpu"; exits 77 (ctest: skipped) without a device
#   <family>_bench                   if <family>_bench.cu exists
# Every test binary defines LOOM_KERNEL_TEST_VARIANT ("emu", "tsan", "asan" or "gpu"); the
# sources see LOOM_SIMT_EMULATION (1 in the emulator) and LOOM_SANITIZED from cuda_compat.h.
# The gpu test is compiled by g++ with LOOM_CUDA_RUNTIME_HOST defined: cuda_compat.h then
# gives it the real runtime API, and the launchers come from the nvcc library.
#
# Also here, for kernels/common's own tests: loom_emu_library() and loom_emu_test().
include_guard(GLOBAL)
include(GoogleTest)
find_package(Threads REQUIRED)
# The emulator needs the toolkit's headers (cuda_bf16.h, vector_types.h...), not a GPU.
find_package(CUDAToolkit QUIET GLOBAL)  # GLOBAL: the CUDA backend links CUDA::cudart too

if(NOT CUDAToolkit_FOUND)
  message(WARNING "loom: CUDA toolkit headers not found: emulated kernels and their tests are not built")
endif()

# CUDA sources follow CXX_STANDARD (20), but CMake 3.25 knows no C++20 flag for nvcc; nvcc
# 12+ takes -std=c++20.
if(LOOM_CUDA AND NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()

set(LOOM_EMU_TEST_TIMEOUT 300 CACHE STRING "ctest TIMEOUT (s) of an emulated kernel test")
set(LOOM_SANITIZE_TEST_TIMEOUT 900 CACHE STRING "ctest TIMEOUT (s) of a sanitizer kernel test")
set(LOOM_GPU_TEST_TIMEOUT 300 CACHE STRING "ctest TIMEOUT (s) of a GPU kernel test")

# Build flags per variant, as interface libraries so targets pick them up by linking. A GPU-only
# build (LOOM_GPU_ONLY) has no emulator: without loom_simt_emu, no emulated or sanitizer
# variant of anything is defined, here or in kernels/common, engine/ and launch/.
if(CUDAToolkit_FOUND AND NOT LOOM_GPU_ONLY AND NOT TARGET loom_simt_emu)
  add_library(loom_simt_emu INTERFACE)
  target_include_directories(loom_simt_emu INTERFACE ${PROJECT_SOURCE_DIR})
  target_include_directories(loom_simt_emu SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
  # Kernels say `#pragma unroll`, which g++ does not know.
  target_compile_options(loom_simt_emu INTERFACE -Wno-unknown-pragmas)
  target_link_libraries(loom_simt_emu INTERFACE Threads::Threads)

  # -O1 -g: readable reports at a bearable speed; -O1 comes after the build type's -O3.
  add_library(loom_sanitize_thread INTERFACE)
  target_compile_options(loom_sanitize_thread INTERFACE -fsanitize=thread -O1 -g -fno-omit-frame-pointer)
  target_link_options(loom_sanitize_thread INTERFACE -fsanitize=thread)

  # UB stops the test (no recovery), like an ASan report does.
  add_library(loom_sanitize_address INTERFACE)
  target_compile_options(loom_sanitize_address INTERFACE -fsanitize=address,undefined
                         -fno-sanitize-recover=undefined -O1 -g -fno-omit-frame-pointer)
  target_link_options(loom_sanitize_address INTERFACE -fsanitize=address,undefined)
endif()

# Sanitizer options are compiled into the sanitizer test binaries (the runtimes ask these
# hooks for their defaults; *SAN_OPTIONS in the environment still override them), because
# gtest_discover_tests passes only one ENVIRONMENT entry through. TSan stops at the first
# report; UBSan prints a stack. The one variable left, OMP_NUM_THREADS=1 for TSan runs, keeps
# OpenBLAS (OpenMP flavour) from starting threads whose synchronisation TSan cannot see.
set(LOOM_SANITIZER_OPTIONS_SOURCE ${CMAKE_BINARY_DIR}/loom_emu/sanitizer_options.cpp)
file(CONFIGURE OUTPUT ${LOOM_SANITIZER_OPTIONS_SOURCE} CONTENT [=[
// Generated by cmake/LoomKernel.cmake: default options of the sanitizer test binaries.
extern "C" const char* __tsan_default_options() { return "halt_on_error=1:second_deadlock_stack=1"; }
extern "C" const char* __asan_default_options() { return "detect_leaks=1"; }
extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }
]=])
set(LOOM_TSAN_ENV "OMP_NUM_THREADS=1")
set(LOOM_ASAN_ENV "${LOOM_TEST_OMP_ENV}")  # cmake/LoomTest.cmake says why

# _loom_variant_libs(<plain|tsan|asan> <out>): the interface libraries of a variant.
function(_loom_variant_libs variant out)
  if(variant STREQUAL "plain")
    set(${out} loom_simt_emu PARENT_SCOPE)
  elseif(variant STREQUAL "tsan")
    set(${out} loom_simt_emu loom_sanitize_thread PARENT_SCOPE)
  elseif(variant STREQUAL "asan")
    set(${out} loom_simt_emu loom_sanitize_address PARENT_SCOPE)
  else()
    message(FATAL_ERROR "loom: unknown emulator variant '${variant}' (plain, tsan or asan)")
  endif()
endfunction()

# loom_emu_library(NAME <target> SOURCE <file.cu> VARIANT <plain|tsan|asan>)
# A static library of <file.cu> compiled as C++ against the emulator. A generated .cpp that
# #includes the .cu keeps the .cu itself a CUDA source for nvcc; diagnostics and sanitizer
# reports still name the .cu and its lines.
function(loom_emu_library)
  cmake_parse_arguments(A "" "NAME;SOURCE;VARIANT" "" ${ARGN})
  _loom_variant_libs(${A_VARIANT} libs)
  get_filename_component(src ${A_SOURCE} ABSOLUTE)
  set(wrapper ${CMAKE_CURRENT_BINARY_DIR}/loom_emu/${A_NAME}.cpp)
  file(CONFIGURE OUTPUT ${wrapper} CONTENT
       "// Generated by cmake/LoomKernel.cmake: ${src} for g++ and the SIMT emulator.\n#include \"${src}\"\n")
  add_library(${A_NAME} STATIC ${wrapper})
  target_link_libraries(${A_NAME} PUBLIC ${libs} PRIVATE loom_warnings)
endfunction()

# loom_emu_test(NAME <exe> SOURCES ... VARIANT <plain|tsan|asan> LABELS ... [LIBS ...]
#               [TIMEOUT s])
# A GoogleTest binary built against the emulator (and the variant's sanitizer), each test
# registered with ctest as <exe>.<Suite>.<Test>.
function(loom_emu_test)
  cmake_parse_arguments(A "" "NAME;VARIANT;TIMEOUT" "SOURCES;LABELS;LIBS" ${ARGN})
  _loom_variant_libs(${A_VARIANT} libs)
  set(env "${LOOM_TEST_OMP_ENV}")
  if(A_VARIANT STREQUAL "tsan")
    set(env ${LOOM_TSAN_ENV})
  elseif(A_VARIANT STREQUAL "asan")
    set(env ${LOOM_ASAN_ENV})
  endif()
  if(NOT A_TIMEOUT)
    if(A_VARIANT STREQUAL "plain")
      set(A_TIMEOUT ${LOOM_EMU_TEST_TIMEOUT})
    else()
      set(A_TIMEOUT ${LOOM_SANITIZE_TEST_TIMEOUT})
    endif()
  endif()
  if(A_VARIANT STREQUAL "plain")
    set(tag emu)
  else()
    set(tag ${A_VARIANT})
  endif()
  add_executable(${A_NAME} ${A_SOURCES})
  if(NOT A_VARIANT STREQUAL "plain")
    target_sources(${A_NAME} PRIVATE ${LOOM_SANITIZER_OPTIONS_SOURCE})
  endif()
  target_link_libraries(${A_NAME} PRIVATE ${A_LIBS} ${libs} GTest::gtest GTest::gtest_main loom_warnings)
  target_compile_definitions(${A_NAME} PRIVATE LOOM_KERNEL_TEST_VARIANT="${tag}"
                             LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}" LOOM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set(props LABELS "${A_LABELS}" TIMEOUT ${A_TIMEOUT})
  if(env)
    list(APPEND props ENVIRONMENT "${env}")
  endif()
  gtest_discover_tests(${A_NAME} DISCOVERY_MODE PRE_TEST TEST_PREFIX "${A_NAME}."
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR} PROPERTIES ${props})
endfunction()

# loom_gpu_test(NAME <exe> SOURCES ... LIBS ...): a GoogleTest binary for a real device,
# label "gpu", skipped (exit 77) where there is none.
function(loom_gpu_test)
  cmake_parse_arguments(A "" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${A_NAME} ${A_SOURCES} ${PROJECT_SOURCE_DIR}/kernels/common/gpu_skip_test.cpp)
  target_include_directories(${A_NAME} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${A_NAME} PRIVATE LOOM_CUDA_RUNTIME_HOST=1 LOOM_KERNEL_TEST_VARIANT="gpu"
                             LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}" LOOM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  target_link_libraries(${A_NAME} PRIVATE ${A_LIBS} CUDA::cudart GTest::gtest GTest::gtest_main loom_warnings)
  gtest_discover_tests(${A_NAME} DISCOVERY_MODE PRE_TEST TEST_PREFIX "${A_NAME}."
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
    PROPERTIES LABELS gpu TIMEOUT ${LOOM_GPU_TEST_TIMEOUT} SKIP_RETURN_CODE 77)
endfunction()

# loom_cuda_options(<target>): how nvcc compiles kernels. Lean on purpose: no -G, no extra
# code generation beyond CMAKE_CUDA_ARCHITECTURES. -Xptxas -v prints registers, shared
# memory and spill bytes per kernel into the build log; -warn-spills makes spills stand out.
function(loom_cuda_options target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xptxas=-v,-warn-spills --expt-relaxed-constexpr -lineinfo>)
  set_target_properties(${target} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
endfunction()

# loom_kernels_ref_serial: the CPU references again, compiled without -fopenmp, for the TSan
# binaries: ThreadSanitizer cannot see OpenMP's own synchronisation and would report races
# inside parallel regions that are none. The OpenMP runtime is still linked so that omp_*
# calls resolve (they answer "one thread"); OpenBLAS links it anyway.
function(_loom_serial_ref_library)
  if(TARGET loom_kernels_ref_serial OR NOT TARGET loom_kernels_ref)
    return()
  endif()
  get_target_property(srcs loom_kernels_ref SOURCES)
  get_target_property(dir loom_kernels_ref SOURCE_DIR)
  set(abs "")
  foreach(s IN LISTS srcs)
    get_filename_component(a ${s} ABSOLUTE BASE_DIR ${dir})
    list(APPEND abs ${a})
  endforeach()
  if(NOT abs)
    add_library(loom_kernels_ref_serial INTERFACE)
    return()
  endif()
  add_library(loom_kernels_ref_serial STATIC ${abs})
  target_include_directories(loom_kernels_ref_serial PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(loom_kernels_ref_serial PRIVATE -Wno-unknown-pragmas)
  target_link_libraries(loom_kernels_ref_serial PUBLIC loom_blas ${OpenMP_CXX_LIBRARIES} PRIVATE loom_warnings)
endfunction()

# loom_add_kernel_family(<family>): see the top of this file. Called from
# kernels/CMakeLists.txt for every kernels/<family>/ that has a <family>.cu.
function(loom_add_kernel_family family)
  set(dir ${CMAKE_CURRENT_SOURCE_DIR}/${family})
  foreach(f ${family}.h ${family}.cu ${family}_test.cpp)
    if(NOT EXISTS ${dir}/${f})
      message(FATAL_ERROR "loom: kernel family '${family}' lacks ${dir}/${f}")
    endif()
  endforeach()
  if(NOT EXISTS ${dir}/${family}_ref.cpp)
    message(WARNING "loom: kernel family '${family}' has no ${family}_ref.cpp: its tests have no CPU reference")
  endif()
  set(cu ${dir}/${family}.cu)
  set(test_src ${dir}/${family}_test.cpp)

  if(TARGET loom_simt_emu)
    loom_emu_library(NAME loom_kernel_${family}_emu SOURCE ${cu} VARIANT plain)
    loom_emu_library(NAME loom_kernel_${family}_emu_tsan SOURCE ${cu} VARIANT tsan)
    loom_emu_library(NAME loom_kernel_${family}_emu_asan SOURCE ${cu} VARIANT asan)
    if(LOOM_TESTS)
      _loom_serial_ref_library()
      loom_emu_test(NAME ${family}_emu_test SOURCES ${test_src} VARIANT plain LABELS emu
                    LIBS loom_kernel_${family}_emu loom_kernels_ref)
      loom_emu_test(NAME ${family}_tsan_test SOURCES ${test_src} VARIANT tsan LABELS sanitize
                    LIBS loom_kernel_${family}_emu_tsan loom_kernels_ref_serial)
      loom_emu_test(NAME ${family}_asan_test SOURCES ${test_src} VARIANT asan LABELS sanitize
                    LIBS loom_kernel_${family}_emu_asan loom_kernels_ref)
    endif()
  endif()

  if(LOOM_CUDA)
    add_library(loom_kernel_${family}_cuda STATIC ${cu})
    target_include_directories(loom_kernel_${family}_cuda PUBLIC ${PROJECT_SOURCE_DIR})
    target_link_libraries(loom_kernel_${family}_cuda PUBLIC CUDA::cudart)
    loom_cuda_options(loom_kernel_${family}_cuda)
    if(LOOM_TESTS)
      loom_gpu_test(NAME ${family}_gpu_test SOURCES ${test_src} LIBS loom_kernel_${family}_cuda loom_kernels_ref)
    endif()
    if(EXISTS ${dir}/${family}_bench.cu)
      add_executable(${family}_bench ${dir}/${family}_bench.cu)
      target_link_libraries(${family}_bench PRIVATE loom_kernel_${family}_cuda loom_kernels_ref)
      loom_cuda_options(${family}_bench)
    endif()
  endif()
endfunction()
