// Compile-time dispatch of run-time flags.
//
// Each macro evaluates a run-time value once and runs the code it wraps with that value as a
// constant expression named NAME, so the wrapped code can pass NAME as a template argument:
// every value gets its own kernel instance, in which the other branches are dead code.
//
//   PNP_BOOL_SWITCH(params.v_uncond != nullptr, kGuided, [&] { return launch<kGuided>(params); });
#pragma once

#define PNP_BOOL_SWITCH(condition, NAME, ...) \
  [&] {                                       \
    if (condition) {                          \
      static constexpr bool NAME = true;      \
      return __VA_ARGS__();                   \
    }                                         \
    static constexpr bool NAME = false;       \
    return __VA_ARGS__();                     \
  }()

// `value` of enum type ENUM, which must be one of the listed enumerators (the last one is the
// fallback for any other value); up to three enumerators, as the kernel's noise modes need.
#define PNP_ENUM_SWITCH3(value, ENUM, FIRST, SECOND, THIRD, NAME, ...) \
  [&] {                                                               \
    switch (value) {                                                  \
      case ENUM::FIRST: {                                             \
        static constexpr ENUM NAME = ENUM::FIRST;                     \
        return __VA_ARGS__();                                         \
      }                                                               \
      case ENUM::SECOND: {                                            \
        static constexpr ENUM NAME = ENUM::SECOND;                    \
        return __VA_ARGS__();                                         \
      }                                                               \
      default: {                                                      \
        static constexpr ENUM NAME = ENUM::THIRD;                     \
        return __VA_ARGS__();                                         \
      }                                                               \
    }                                                                 \
  }()
