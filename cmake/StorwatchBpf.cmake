# eBPF programs: compiled with clang -target bpf against a vmlinux.h generated from the build
# machine's kernel BTF (CO-RE: libbpf relocates field offsets at load time for the running kernel),
# then turned into a libbpf skeleton header by bpftool.
#
# STORWATCH_HAVE_BPF is ON when clang, bpftool, libbpf and BTF are all there. When it is OFF the
# daemon still builds; its BPF sources then report source.unavailable ("built without BPF: ...").
include_guard(GLOBAL)

set(STORWATCH_BTF_FILE "/sys/kernel/btf/vmlinux" CACHE FILEPATH "Kernel BTF that vmlinux.h is generated from")
option(STORWATCH_BPF "Build the eBPF sources (needs clang, bpftool, libbpf, kernel BTF)" ON)

find_program(STORWATCH_BPF_CLANG NAMES clang clang-14)
find_program(STORWATCH_BPFTOOL bpftool HINTS /usr/sbin /sbin)
pkg_check_modules(LIBBPF IMPORTED_TARGET libbpf)

set(STORWATCH_HAVE_BPF OFF)
set(STORWATCH_BPF_MISSING "")
if(NOT STORWATCH_BPF)
  set(STORWATCH_BPF_MISSING "disabled at build time (STORWATCH_BPF=OFF)")
elseif(NOT STORWATCH_BPF_CLANG)
  set(STORWATCH_BPF_MISSING "clang not found at build time")
elseif(NOT STORWATCH_BPFTOOL)
  set(STORWATCH_BPF_MISSING "bpftool not found at build time")
elseif(NOT LIBBPF_FOUND)
  set(STORWATCH_BPF_MISSING "libbpf not found at build time")
elseif(NOT EXISTS ${STORWATCH_BTF_FILE})
  set(STORWATCH_BPF_MISSING "no kernel BTF (${STORWATCH_BTF_FILE}) at build time")
else()
  set(STORWATCH_HAVE_BPF ON)
endif()
if(STORWATCH_HAVE_BPF)
  message(STATUS "eBPF sources: on (${STORWATCH_BPF_CLANG}, ${STORWATCH_BPFTOOL}, libbpf ${LIBBPF_VERSION})")
else()
  message(STATUS "eBPF sources: off: ${STORWATCH_BPF_MISSING}")
endif()

set(STORWATCH_BPF_DIR ${CMAKE_BINARY_DIR}/bpf)
if(STORWATCH_HAVE_BPF)
  file(MAKE_DIRECTORY ${STORWATCH_BPF_DIR})
  add_custom_command(
    OUTPUT ${STORWATCH_BPF_DIR}/vmlinux.h
    COMMAND ${STORWATCH_BPFTOOL} btf dump file ${STORWATCH_BTF_FILE} format c > ${STORWATCH_BPF_DIR}/vmlinux.h.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${STORWATCH_BPF_DIR}/vmlinux.h.tmp ${STORWATCH_BPF_DIR}/vmlinux.h
    COMMENT "Generating vmlinux.h from ${STORWATCH_BTF_FILE}"
    VERBATIM)
  add_custom_target(storwatch_vmlinux_h DEPENDS ${STORWATCH_BPF_DIR}/vmlinux.h)
endif()

# storwatch_bpf_skeleton(<name> <source.bpf.c>): builds <name>.bpf.o and the skeleton header
# <name>.skel.h (struct <name>, <name>__open_and_load() ...), and an INTERFACE target
# storwatch_bpf_<name> that puts the header on the include path and links libbpf.
# Only call it when STORWATCH_HAVE_BPF is ON.
function(storwatch_bpf_skeleton name src)
  get_filename_component(src_abs ${src} ABSOLUTE)
  get_filename_component(src_dir ${src_abs} DIRECTORY)
  set(obj ${STORWATCH_BPF_DIR}/${name}.bpf.o)
  set(skel ${STORWATCH_BPF_DIR}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${STORWATCH_BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror
            -I${STORWATCH_BPF_DIR} -I${src_dir} -c ${src_abs} -o ${obj}
    DEPENDS ${src_abs} ${STORWATCH_BPF_DIR}/vmlinux.h ${ARGN}
    IMPLICIT_DEPENDS C ${src_abs}
    COMMENT "Compiling eBPF program ${name}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${STORWATCH_BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}.tmp
    COMMAND ${CMAKE_COMMAND} -E rename ${skel}.tmp ${skel}
    DEPENDS ${obj}
    COMMENT "Generating skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(storwatch_bpf_${name}_gen DEPENDS ${skel})
  add_library(storwatch_bpf_${name} INTERFACE)
  add_dependencies(storwatch_bpf_${name} storwatch_bpf_${name}_gen)
  target_include_directories(storwatch_bpf_${name} INTERFACE ${STORWATCH_BPF_DIR})
  target_link_libraries(storwatch_bpf_${name} INTERFACE PkgConfig::LIBBPF)
endfunction()
