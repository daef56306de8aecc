# Install rules (included by the top CMakeLists.txt when KEOPS_INSTALL is on):
#   lib/libkeops.so.1.3.0 (soname libkeops.so.1), lib/libkeops.a, include/keops.h,
#   bin/keops-dump, lib/cmake/keops/ (find_package(keops 0.3 CONFIG): keops::keops, and
#   keops::keops_static when the archive was built), lib/pkgconfig/keops.pc.
# Both package files locate the prefix from their own place, so that
# `cmake --install build --prefix P` works for any P chosen after configuring.
include(CMakePackageConfigHelpers)

set(KEOPS_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/keops)

install(TARGETS keops EXPORT keopsTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/keops.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(KEOPS_ARCHIVE)
  install(FILES ${KEOPS_ARCHIVE} DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET keops-dump)
  set_target_properties(keops-dump PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
  install(TARGETS keops-dump RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# What linking libkeops.a needs: the very libLLVM this build linked (a full path: no -L that
# could pick another LLVM), threads, libm, libdl.
get_target_property(KEOPS_LLVM_LIBRARY LLVM LOCATION)
set(KEOPS_STATIC_LIBS "${KEOPS_LLVM_LIBRARY};Threads::Threads;m;${CMAKE_DL_LIBS}")
set(KEOPS_PC_LIBS_PRIVATE "${KEOPS_LLVM_LIBRARY} -pthread -lm")
foreach(lib ${CMAKE_DL_LIBS})
  string(APPEND KEOPS_PC_LIBS_PRIVATE " -l${lib}")
endforeach()
if(KEOPS_ARCHIVE)
  set(KEOPS_HAS_ARCHIVE ON)
else()
  set(KEOPS_HAS_ARCHIVE OFF)
endif()

install(EXPORT keopsTargets NAMESPACE keops:: DESTINATION ${KEOPS_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/keopsConfig.cmake.in
  ${PROJECT_BINARY_DIR}/keopsConfig.cmake INSTALL_DESTINATION ${KEOPS_CMAKE_DIR}
  PATH_VARS CMAKE_INSTALL_LIBDIR CMAKE_INSTALL_INCLUDEDIR)
# 0.x releases break compatibility at each minor version.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/keopsConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/keopsConfig.cmake ${PROJECT_BINARY_DIR}/keopsConfigVersion.cmake
  DESTINATION ${KEOPS_CMAKE_DIR})

# pkg-config: ${pcfiledir} makes keops.pc relocatable where the libdir is relative.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(KEOPS_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(KEOPS_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  file(RELATIVE_PATH rel "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
  string(REGEX REPLACE "/$" "" rel "${rel}")
  set(KEOPS_PC_PREFIX "\${pcfiledir}/${rel}")
  set(KEOPS_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
if(IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(KEOPS_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
else()
  set(KEOPS_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/keops.pc.in ${PROJECT_BINARY_DIR}/keops.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/keops.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
