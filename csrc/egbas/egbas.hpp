// egbas-fast core: header-only C++17, no Python. Include this one header.
#pragma once
#include "bits.hpp"
#include "nearest.hpp"
#include "parallel.hpp"
#include "piecewise.hpp"
#include "rng.hpp"
#include "simd.hpp"
#include "steer.hpp"
#include "tree.hpp"
