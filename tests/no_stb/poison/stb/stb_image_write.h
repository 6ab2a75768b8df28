// Stands in for the real stb_image_write.h in the no-stb compile tests (tests/no_stb/): first on the
// include path, so that any header that includes stb fails the build with this message.
#error "stb_image_write.h was included: this translation unit must compile without stb"
