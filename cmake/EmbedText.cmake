# cmake -DIN=file -DOUT=file.inc -P EmbedText.cmake: a C++ raw string constant kInterfaceText.
file(READ ${IN} content)
file(WRITE ${OUT} "constexpr std::string_view kInterfaceText = R\"storwatch(${content})storwatch\";\n")
