// Entry points that IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and
// polygraphy --plugins look up with dlsym. They are the only exported symbols
// of libmhc_trt_plugins_trt<major>.so (everything else is hidden), which keeps the plugin
// library from clashing with other plugin libraries loaded into one process.
//
// Loading the library is also enough on its own (polygraphy --plugins and
// ctypes.CDLL only dlopen it): it then registers its creators with the TensorRT
// already loaded in the process (native/plugins/common/mhcRegistration.h).
#include "mhcOpPlugin.h"
#include "mhcRegistration.h"

#define MHC_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace
{
// Every creator of the library: what getCreators hands out and what loading registers.
nvinfer1::IPluginCreatorInterface* const* creatorList(int32_t& nbCreators) noexcept
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {
        mhc::plugin::getMhcPreCreator(),
        mhc::plugin::getMhcSinkhornCreator(),
        mhc::plugin::getMhcPostCreator(),
        mhc::plugin::getMhcHeadCreator(),
        mhc::plugin::getMhcPostPreCreator(),
        mhc::plugin::getMhcPostHeadCreator(),
        mhc::plugin::getMhcMixCreator(),
        mhc::plugin::getMhcCollapseCreator(),
        mhc::plugin::getMhcPostMixCreator(),
        mhc::plugin::getMhcPostCollapseCreator(),
    };
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

// Runs when the library is loaded. Each creator and its tables are function
// statics built at their first use (here), so the order in which the plugin
// files' static objects are initialized does not matter: the harness's
// dlopen-only check compares the registered creators' fields with the spec.
__attribute__((constructor)) void registerOnLoad()
{
    mhc::plugin::registerOnLoad(creatorList);
}
} // namespace

MHC_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    mhc::plugin::setLoggerFinder(finder);
}

MHC_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    return mhc::plugin::handOverCreators(creatorList, nbCreators);
}
