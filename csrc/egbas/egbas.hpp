// egbas-fast core: header-only C++17, no Python. Include this one header.
#pragma once
#include "bits.hpp"
#include "parallel.hpp"
#include "simd.hpp"
