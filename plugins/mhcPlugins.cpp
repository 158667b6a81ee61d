// Entry points that IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and
// polygraphy --plugins look up with dlsym. They are the only exported symbols
// of libmhc_trt_plugins_trt<major>.so (everything else is hidden), which keeps the plugin
// library from clashing with other plugin libraries loaded into one process.
#include "mhcPluginCommon.h"

#define MHC_PLUGIN_EXPORT extern "C" __attribute__((visibility("default")))

MHC_PLUGIN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    mhc::plugin::setLoggerFinder(finder);
}

MHC_PLUGIN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
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
