# Install rules: the library, headers under include/cpr/, libcpr.pc and a CMake package
# (find_package(libcpr CONFIG) -> libcpr::cpr, and libcpr::cpr_static with CPR_BUILD_STATIC).
include(CMakePackageConfigHelpers)

set(CPR_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/libcpr)
set(CPR_INSTALL_TARGETS cpr)
if(CPR_BUILD_STATIC)
  list(APPEND CPR_INSTALL_TARGETS cpr_static)
endif()

install(TARGETS ${CPR_INSTALL_TARGETS} EXPORT libcprTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cpr)
install(EXPORT libcprTargets NAMESPACE libcpr:: DESTINATION ${CPR_CMAKE_DIR})

# The config file resolves the static archive's glib/json-c only when it is installed.
set(CPR_CONFIG_HAS_STATIC ${CPR_BUILD_STATIC})
# GnuTLS is opened with dlopen when TLS is first used, not linked (lib/channel/gnutls_lib.c):
# the archive needs only the loader for it.
if(GNUTLS_FOUND)
  set(CPR_PC_GNUTLS " -ldl")
else()
  set(CPR_PC_GNUTLS "")
endif()
# zstd is needed by the archive only when it was built with it.
foreach(dep ZSTD)
  string(TOLOWER ${dep} lib)
  if(${dep}_FOUND)
    set(CPR_CONFIG_HAS_${dep} TRUE)
    set(CPR_PC_${dep} " -l${lib}")
  else()
    set(CPR_CONFIG_HAS_${dep} FALSE)
    set(CPR_PC_${dep} "")
  endif()
endforeach()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/libcprConfig.cmake.in
  ${PROJECT_BINARY_DIR}/libcprConfig.cmake INSTALL_DESTINATION ${CPR_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/libcprConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/libcprConfig.cmake ${PROJECT_BINARY_DIR}/libcprConfigVersion.cmake
  DESTINATION ${CPR_CMAKE_DIR})

# libcpr.pc finds its prefix from its own location (${pcfiledir}), so that an install with
# `cmake --install . --prefix DIR` (the package.consumer test, distro staging) is usable in
# place. Absolute install dirs given by the user are kept as they are.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(CPR_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(CPR_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(CPR_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH cpr_pc_up "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
  string(REGEX REPLACE "/$" "" cpr_pc_up "${cpr_pc_up}")
  set(CPR_PC_PREFIX "\${pcfiledir}/${cpr_pc_up}")
  set(CPR_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(CPR_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/libcpr.pc.in ${PROJECT_BINARY_DIR}/libcpr.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/libcpr.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
