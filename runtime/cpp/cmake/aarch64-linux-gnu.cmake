# CMake toolchain file: build runtime/cpp for 64-bit Arm Linux (aarch64: Jetson, Raspberry Pi 4/5, Graviton...) on an
# x86-64 Debian or Ubuntu machine with its cross compiler (g++-aarch64-linux-gnu). `just cpp-arm64` uses it; by hand:
#
#   cmake -S runtime/cpp -B build-arm64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=runtime/cpp/cmake/aarch64-linux-gnu.cmake \
#         -DONNXRUNTIME_LIBRARY=/path/to/aarch64/libonnxruntime.so.1.x.y -DONNXRUNTIME_INCLUDE_DIR=/path/to/headers
#
# The board's libraries (libsndfile, libsoxr, libpng, utf8proc and ONNX Runtime, all aarch64 builds) come from one of:
#   - Debian multiarch (the default, what `.ci/setup arm64` installs): `dpkg --add-architecture arm64` and the
#     packages' arm64 twins (`apt install libsoxr-dev:arm64 ...`) beside the host's, in /usr/lib/aarch64-linux-gnu;
#   - a copy of the board's root file system: -DCMAKE_SYSROOT=/path/to/rootfs (with the -dev packages installed in
#     it); headers, libraries and pkg-config files are then looked up only there.
# A program built here runs on the build machine under qemu-user (`just cpp-arm64-run`; docs/cpp.md, "Cross-building").
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)  # find_library looks in lib/aarch64-linux-gnu first

# pkg-config (soxr, sndfile, libutf8proc) reads the aarch64 .pc files only, never the host's x86-64 ones.
if(CMAKE_SYSROOT)
  set(CMAKE_FIND_ROOT_PATH "${CMAKE_SYSROOT}")
  set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)  # compilers and tools are the host's
  set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
  set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
  set(ENV{PKG_CONFIG_SYSROOT_DIR} "${CMAKE_SYSROOT}")
  set(ENV{PKG_CONFIG_LIBDIR}
      "${CMAKE_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${CMAKE_SYSROOT}/usr/share/pkgconfig")
else()
  set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
endif()
