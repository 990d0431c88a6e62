# Install rules: the library, headers under include/cpr/, libcpr.pc and a CMake package
# (find_package(libcpr CONFIG) -> libcpr::cpr).
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

configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/libcprConfig.cmake.in
  ${PROJECT_BINARY_DIR}/libcprConfig.cmake INSTALL_DESTINATION ${CPR_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/libcprConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/libcprConfig.cmake ${PROJECT_BINARY_DIR}/libcprConfigVersion.cmake
  DESTINATION ${CPR_CMAKE_DIR})

configure_file(${PROJECT_SOURCE_DIR}/cmake/libcpr.pc.in ${PROJECT_BINARY_DIR}/libcpr.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/libcpr.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
