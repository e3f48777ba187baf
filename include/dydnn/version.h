#pragma once
/// \file
/// The library version.

/// Major, minor and patch version of dydnn.
#define DYDNN_VERSION_MAJOR 0
#define DYDNN_VERSION_MINOR 1
#define DYDNN_VERSION_PATCH 0
/// The version as a string.
#define DYDNN_VERSION_STRING "0.1.0"
