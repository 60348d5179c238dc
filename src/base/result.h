// The daemon and the CLI use the same Result as the public client API.
#pragma once
#include <storwatch/result.h>
